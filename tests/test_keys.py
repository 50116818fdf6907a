"""Push-to-talk by a key in a real pseudo-terminal: the key reader alone, then the real CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.service.keys import KeyReader, decode

from .conftest import SPEECH_RATE, silence, write_wav
from .pulse import PulseServer, pulse_fixture  # noqa: F401 - the fixture
from .test_audio_pulse import until

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(name="pty")
def pty_fixture() -> Iterator[tuple[int, int]]:
    """(master, slave) of a fresh pseudo-terminal, in its default (cooked, echoing) mode."""
    master, slave = os.openpty()
    try:
        yield master, slave
    finally:
        for fd in (master, slave):
            with contextlib.suppress(OSError):  # a test closed it already
                os.close(fd)


def cooked(fd: int) -> bool:
    lflag = termios.tcgetattr(fd)[3]
    return bool(lflag & termios.ICANON) and bool(lflag & termios.ECHO)


def test_decode_maps_keys_and_skips_escape_sequences() -> None:
    assert decode(b" ") == ["talk"]
    assert decode(b"\r\n") == ["talk", "talk"]
    assert decode(b"\x1b") == ["cancel"]
    assert decode(b"Q") == ["cancel"]
    assert decode(b"\x1b[A\x1bOP\x1b[15~x") == []  # up arrow, F1, F5, an unbound key
    assert decode(b"\x1b[B \x1b") == ["talk", "cancel"]


async def test_keys_arrive_one_at_a_time_and_the_terminal_is_restored(pty: tuple[int, int]) -> None:
    master, slave = pty
    before = termios.tcgetattr(slave)
    assert cooked(slave)
    actions: list[str] = []
    reader = KeyReader(slave, actions.append)
    task = asyncio.create_task(reader.run(), name="keys")
    await until(lambda: not cooked(slave), 2)  # cbreak: no line editing, no echo
    os.write(master, b" ")  # no Enter needed: the key alone is delivered
    await until(lambda: actions == ["talk"], 2)
    os.write(master, b"\x1b[Aq")
    await until(lambda: actions == ["talk", "cancel"], 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert termios.tcgetattr(slave) == before
    # nothing was echoed back to the terminal
    os.set_blocking(master, False)
    with pytest.raises(BlockingIOError):
        os.read(master, 100)


async def test_an_error_in_an_action_is_raised_and_the_terminal_restored(pty: tuple[int, int]) -> None:
    master, slave = pty
    before = termios.tcgetattr(slave)

    def broken(action: str) -> None:
        raise RuntimeError(f"cannot {action}")

    task = asyncio.create_task(KeyReader(slave, broken).run(), name="keys")
    await until(lambda: not cooked(slave), 2)
    os.write(master, b"\n")
    with pytest.raises(RuntimeError, match="cannot talk"):
        await asyncio.wait_for(task, 2)
    assert termios.tcgetattr(slave) == before


async def test_the_reader_ends_when_the_terminal_hangs_up(pty: tuple[int, int]) -> None:
    master, slave = pty
    task = asyncio.create_task(KeyReader(slave, lambda action: None).run(), name="keys")
    await until(lambda: not cooked(slave), 2)
    os.close(master)
    await asyncio.wait_for(task, 2)  # EIO on read: the reader ends, no error, no busy loop


@pytest.mark.models
async def test_the_cli_listens_only_after_the_key(
    pulse: PulseServer, pty: tuple[int, int], tmp_path: Path, speak: Any, model_dir: Path
) -> None:
    """``assistant run --push-to-talk`` on a terminal: a question without the key is ignored; the
    same question after Space is answered; SIGTERM leaves the terminal as it found it."""
    master, slave = pty
    before = termios.tcgetattr(slave)
    question = np.concatenate([speak("What is the capital of France?"), silence(300)])
    wav = write_wav(tmp_path / "q.wav", question, SPEECH_RATE)
    report = tmp_path / "turns.jsonl"
    daemon = subprocess.Popen(  # noqa: ASYNC220 - a daemon, not awaited on the loop
        [sys.executable, "-m", "assistant", "--model-dir", str(model_dir), "run", "--push-to-talk",
         "--input", "pulse:mic.monitor", "--output", "pulse:spk", "--report", str(report)],
        stdin=slave, stderr=subprocess.PIPE, cwd=REPO, env=pulse.env,
    )  # fmt: skip
    try:
        await until(lambda: not cooked(slave), 90)  # models loaded, the key reader is on
        await asyncio.sleep(1.0)  # the microphone stream starts
        await asyncio.to_thread(pulse.play(wav).wait, 20)
        await asyncio.sleep(3.0)
        assert not report.exists() or report.read_text() == "", "answered without the key"
        os.write(master, b" ")
        await asyncio.sleep(0.3)
        await asyncio.to_thread(pulse.play(wav).wait, 20)
        await until(lambda: report.exists() and report.read_text().strip() != "", 60)
        daemon.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(daemon.communicate, timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
    assert daemon.returncode == 0, err.decode()
    assert "push-to-talk: Space or Enter to talk" in err.decode()
    lines = report.read_text().splitlines()
    assert len(lines) == 1 and '"answered"' in lines[0], lines
    assert "capital" in lines[0].lower()
    assert termios.tcgetattr(slave) == before
