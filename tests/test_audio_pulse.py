"""The PulseAudio backend against a private server's null sinks: capture, playback, interrupt,
device loss and recovery, a missing device, and a spoken question answered end to end."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.audio.live import Backoff
from assistant.audio.pulse import PulseSink, PulseSource, tool_message
from assistant.clock import StreamClock
from assistant.daemon import Daemon
from assistant.messages import AudioIn, EndOfStream, Message

from .conftest import SPEECH_RATE, silence, write_wav
from .pulse import PulseServer, pulse_fixture  # noqa: F401 - the fixture

RATE = 22_050


def tone(freq: float, seconds: float, rate: int, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * amp * 32767).astype(np.int16)


class Recorder:
    """Records a monitor with parec, stamping when each 10 ms piece arrived (monotonic s)."""

    def __init__(self, server: PulseServer, device: str = "spk.monitor") -> None:
        self.proc = server.record(device)
        self.pieces: list[tuple[float, bytes]] = []
        self.thread = threading.Thread(target=self._read, name="recorder", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while data := self.proc.stdout.read(320):
            self.pieces.append((time.monotonic(), data))

    async def flowing(self) -> None:
        """The null sink renders in 2 s blocks until a low-latency client is there: wait."""
        deadline = time.monotonic() + 8
        while not self.pieces and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert self.pieces, "parec never produced data"

    def stop(self) -> tuple[np.ndarray, np.ndarray]:
        """(samples, arrival time of each sample's piece)."""
        self.proc.terminate()
        self.thread.join(5)
        self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        samples = np.frombuffer(b"".join(p for _, p in self.pieces), dtype="<i2")
        stamps = np.concatenate([np.full(len(p) // 2, t) for t, p in self.pieces])
        return samples, stamps


def loud(samples: np.ndarray, threshold: int = 1000) -> np.ndarray:
    return np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)


async def run_source(source: Any) -> tuple[asyncio.Task[None], list[Message]]:
    outbox: asyncio.Queue[Message] = asyncio.Queue(50)
    got: list[Message] = []

    async def drain() -> None:
        while not isinstance(item := await outbox.get(), EndOfStream):
            got.append(item)
        got.append(item)

    async def both() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(drain(), name="drain")
            group.create_task(source.run(outbox, StreamClock(realtime=True)), name="source")

    return asyncio.create_task(both(), name="source-and-drain"), got


async def until(predicate: Any, timeout_s: float) -> float:
    """Seconds until ``predicate()`` held (fails after ``timeout_s``)."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout_s, "timed out"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def audio(got: list[Message]) -> tuple[np.ndarray, list[float]]:
    pieces = [m for m in got if isinstance(m, AudioIn)]
    return np.frombuffer(b"".join(p.pcm for p in pieces), dtype="<i2"), [p.start_ms for p in pieces]


def assert_continuous(starts: list[float]) -> None:
    assert starts[0] == 0.0
    assert np.allclose(np.diff(starts), 20.0)


async def test_source_records_what_is_played_into_the_microphone(pulse: PulseServer, tmp_path: Path) -> None:
    source = PulseSource("mic.monitor")
    task, got = await run_source(source)
    await until(lambda: source.state == "listening", 8)
    begun = time.monotonic() - len(got) * 0.02
    wav = write_wav(tmp_path / "tone.wav", tone(1000, 0.5, RATE), RATE)
    played_at = time.monotonic()
    pulse.play(wav).wait(10)
    await asyncio.sleep(0.5)
    source.stop()
    await task
    assert isinstance(got[-1], EndOfStream)
    samples, starts = audio(got)
    assert_continuous(starts)
    heard = loud(samples)
    assert heard.size, "the tone never reached the source"
    onset_s = heard[0] / SPEECH_RATE
    assert abs(onset_s - (played_at - begun)) < 0.5  # paplay's own start-up included
    burst = samples[heard[0] : heard[0] + 4000].astype(np.float32)
    peak_hz = np.argmax(np.abs(np.fft.rfft(burst))) * SPEECH_RATE / burst.size
    assert abs(peak_hz - 1000) < 20
    assert 0.4 < (heard[-1] - heard[0]) / SPEECH_RATE < 0.6


async def test_sink_plays_on_the_speaker_and_reports_its_level(pulse: PulseServer) -> None:
    recorder = Recorder(pulse)
    await recorder.flowing()
    levels: list[float] = []
    async with PulseSink("spk") as sink:
        for piece in np.array_split(tone(440, 1.0, RATE), 50):
            await sink.write(piece.tobytes(), RATE)
            levels.append(sink.playback_level())
        assert sink.playing
        await sink.turn_done()
        assert not sink.playing and sink.playback_level() == 0.0
    samples, _ = recorder.stop()
    heard = loud(samples)
    assert 0.9 < (heard[-1] - heard[0]) / SPEECH_RATE < 1.1
    burst = samples[heard[0] : heard[0] + 8000].astype(np.float32)
    assert abs(np.argmax(np.abs(np.fft.rfft(burst))) * SPEECH_RATE / burst.size - 440) < 10
    assert max(levels) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)


async def test_interrupt_silences_the_speaker_within_200_ms(pulse: PulseServer) -> None:
    recorder = Recorder(pulse)
    await recorder.flowing()
    async with PulseSink("spk", rate=RATE) as sink:  # a known rate: the device opens at once
        await until(lambda: sink.state == "ready", 5)

        async def speak() -> None:
            for piece in np.array_split(tone(440, 4.0, RATE), 200):
                await sink.write(piece.tobytes(), RATE)

        writer = asyncio.create_task(speak(), name="writer")
        await until(lambda: sink.playback_level() > 0, 5)
        await asyncio.sleep(0.5)
        interrupted = time.monotonic()
        sink.interrupt()
        writer.cancel()
        await asyncio.wait([writer])
        await asyncio.sleep(0.2)
        stopped_s = time.monotonic() - interrupted
        assert not sink.playing and sink.playback_level() == 0.0
        await asyncio.sleep(0.3)
    samples, stamps = recorder.stop()
    heard = loud(samples)
    # the recorder got the last loud sample this long after interrupt(): an upper bound of the
    # time the speaker went on playing (the recorder's own latency included)
    latency_s = stamps[heard[-1]] - interrupted
    print(f"interrupt -> silence on spk.monitor: {latency_s * 1000:.0f} ms (bound)")
    assert latency_s < 0.2 < stopped_s + 0.01


async def test_source_waits_for_a_lost_server_and_resumes(pulse: PulseServer, tmp_path: Path) -> None:
    states: list[tuple[float, str]] = []
    source = PulseSource("mic.monitor", on_state=lambda s: states.append((time.monotonic(), s)))
    task, got = await run_source(source)
    await until(lambda: source.state == "listening", 8)
    pulse.stop()
    await until(lambda: source.state == "waiting_for_device", 3)
    await asyncio.sleep(1.0)
    assert source.state == "waiting_for_device"  # no crash; it keeps feeding silence meanwhile
    await assert_recovers(pulse, source, task, got, states, tmp_path, timeout_s=10, away_ms=1000)


async def assert_recovers(
    pulse: PulseServer,
    source: Any,
    task: asyncio.Task[None],
    got: list[Message],
    states: list[tuple[float, str]],
    tmp_path: Path,
    *,
    timeout_s: float,
    away_ms: float,
) -> None:
    """A source whose server is down: the timeline goes on as silence; once the server is back,
    the source listens again, records a tone, and its states and timeline show no gap."""
    fed_while_away = len(got)
    await asyncio.sleep(0.2)
    assert len(got) > fed_while_away  # the timeline goes on, as silence
    pulse.start()
    restarted = time.monotonic()
    back_s = await until(lambda: source.state == "listening", timeout_s)
    print(f"server back -> listening: {back_s:.1f} s; losses {source.losses}")
    wav = write_wav(tmp_path / "tone.wav", tone(1000, 0.5, RATE), RATE)
    pulse.play(wav).wait(10)
    await asyncio.sleep(0.5)
    source.stop()
    await task
    samples, starts = audio(got)
    assert_continuous(starts)
    assert loud(samples).size > 0.3 * SPEECH_RATE, "no audio after recovery"
    assert [s for _, s in states] == ["listening", "waiting_for_device", "listening"]
    assert states[-1][0] >= restarted and source.silence_ms > away_ms


async def test_missing_device_backs_off_without_a_tight_loop(pulse: PulseServer) -> None:
    states: list[str] = []
    source = PulseSource("no-such-mic", on_state=states.append, backoff=Backoff(initial_s=0.2, max_s=1.0))
    task, got = await run_source(source)
    await asyncio.sleep(3.0)
    source.stop()
    await task
    assert states == ["waiting_for_device"]
    # delays 0.2, 0.4, 0.8, 1.0, ...: at most 5 attempts in 3 s (a tight loop would make hundreds)
    assert 3 <= source.backoff.attempts <= 5
    assert "No such entity" in source.last_error
    _, starts = audio(got)
    assert_continuous(starts)
    assert starts[-1] > 2500  # the timeline went on, as silence


async def test_sink_waits_for_a_lost_server_and_plays_again(pulse: PulseServer) -> None:
    states: list[str] = []
    async with PulseSink("spk", rate=RATE, on_state=states.append) as sink:
        await until(lambda: sink.state == "ready", 5)
        pulse.stop()
        await until(lambda: sink.state == "waiting_for_device", 3)
        await sink.write(tone(440, 0.5, RATE).tobytes(), RATE)  # dropped, never blocks
        assert sink.dropped_ms == pytest.approx(500, abs=1)
        pulse.start()
        recorder = Recorder(pulse)
        await until(lambda: sink.state == "ready", 10)
        await recorder.flowing()
        await sink.write(tone(440, 0.5, RATE).tobytes(), RATE)
        await sink.turn_done()
        await asyncio.sleep(0.5)  # the recorder's own latency
    samples, _ = recorder.stop()
    assert loud(samples).size > 0.3 * SPEECH_RATE
    assert states == ["ready", "waiting_for_device", "ready"]


@pytest.mark.models
async def test_a_spoken_question_is_answered_on_the_speaker(
    pulse: PulseServer, tmp_path: Path, engines: Any, speak: Any
) -> None:
    from assistant.config import Config
    from assistant.pipeline import Pipeline

    question = np.concatenate([speak("What is the capital of France?"), silence(300)])
    wav = write_wav(tmp_path / "q.wav", question, SPEECH_RATE)
    recorder = Recorder(pulse)
    await recorder.flowing()
    source = PulseSource("mic.monitor")
    sink = PulseSink("spk")
    pipeline = Pipeline(Config(), engines, sink)
    run = asyncio.create_task(Daemon(pipeline).run(source), name="pipeline")
    await until(lambda: source.state == "listening", 8)
    pulse.play(wav).wait(20)
    turns: list[Any] = []
    pipeline.on_turn = turns.append
    await until(lambda: bool(turns), 60)
    source.stop()
    await run
    await sink.close()
    samples, _ = recorder.stop()
    heard = loud(samples, 500)
    assert heard.size, "nothing was played on the speaker"
    answer = samples[max(0, heard[0] - 1600) : heard[-1] + 1600]
    text = engines.asr.transcribe(answer.tobytes()).text
    print(f"heard on the speaker: {text!r}")
    assert any(word in text.lower() for word in ("paris", "france", "capital")), text


@pytest.mark.models
async def test_the_daemon_answers_on_the_virtual_devices_and_stops_on_sigterm(
    pulse: PulseServer, tmp_path: Path, engines: Any, speak: Any, model_dir: Path
) -> None:
    """``assistant run --input pulse:... --output pulse:...`` as a service would run it."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    question = np.concatenate([speak("What is the capital of France?"), silence(300)])
    wav = write_wav(tmp_path / "q.wav", question, SPEECH_RATE)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(120)
    report = tmp_path / "turns.jsonl"
    recorder = Recorder(pulse)
    await recorder.flowing()
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    daemon = subprocess.Popen(  # noqa: ASYNC220 - a daemon, not awaited on the loop
        [sys.executable, "-m", "assistant", "--model-dir", str(model_dir), "run",
         "--input", "pulse:mic.monitor", "--output", "pulse:spk", "--report", str(report)],
        env=env, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        while b"READY=1" not in await asyncio.to_thread(notify.recv, 4096):
            pass
        await asyncio.sleep(1.0)  # the microphone stream starts
        pulse.play(wav).wait(20)
        await until(lambda: report.exists() and report.read_text().strip() != "", 60)
        daemon.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(daemon.communicate, timeout=30)
        assert daemon.returncode == 0, err.decode()
    finally:
        if daemon.poll() is None:
            daemon.kill()
        notify.close()
    samples, _ = recorder.stop()
    heard = loud(samples, 500)
    assert heard.size, "nothing was played on the speaker"
    text = engines.asr.transcribe(samples[max(0, heard[0] - 1600) : heard[-1] + 1600].tobytes()).text
    assert any(word in text.lower() for word in ("paris", "france", "capital")), text


def test_tool_messages_lose_progress_lines_and_terminal_codes() -> None:
    raw = b"Time: 0.000 sec; Latency: 24 usec.\r\x1b[KStream error: No such entity\n"
    raw += b"Connection failure: refused\n"
    assert tool_message(raw) == "Stream error: No such entity; Connection failure: refused"
    assert tool_message("") == ""
