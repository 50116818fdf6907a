"""Home Assistant's side of Wyoming, for tests: its calls as its ``wyoming`` integration makes them
(``homeassistant/components/wyoming``: ``data.py`` describe, ``stt.py``, ``tts.py``), with the
``wyoming`` library's own ``AsyncTcpClient``; and the real reference servers (wyoming-faster-whisper,
wyoming-piper) started on loopback ports with our default models.

The library's ``audio`` module imports ``audioop`` (deprecated since Python 3.11): it is imported
here once with that warning silenced, so tests that import from here run under ``-W error``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from assistant.wyoming.client import EventSocket
from assistant.wyoming.protocol import WireEvent

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from wyoming.asr import Transcribe, Transcript
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.error import Error
    from wyoming.event import Event
    from wyoming.info import Describe, Info
    from wyoming.ping import Ping, Pong
    from wyoming.pipeline import PipelineStage, RunPipeline
    from wyoming.satellite import PauseSatellite, RunSatellite
    from wyoming.snd import Played
    from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped
    from wyoming.vad import VoiceStarted, VoiceStopped
    from wyoming.wake import Detection

__all__ = [
    "AsyncTcpClient", "AudioChunk", "AudioStart", "AudioStop", "Describe", "Detection", "Error", "Event",
    "Info", "PauseSatellite", "Ping", "PipelineStage", "Played", "Pong", "RunPipeline", "RunSatellite",
    "Synthesize", "SynthesizeChunk", "SynthesizeStart", "SynthesizeStop", "SynthesizeStopped", "Transcribe",
    "Transcript", "VoiceStarted", "VoiceStopped",
]  # fmt: skip


async def ha_info(port: int, host: str = "127.0.0.1") -> Info:
    """``data.py::load_wyoming_info``: describe, wait for the info."""
    async with AsyncTcpClient(host, port) as client, asyncio.timeout(5):
        await client.write_event(Describe().event())
        while True:
            event = await client.read_event()
            assert event is not None
            if Info.is_type(event.type):
                return Info.from_event(event)


async def ha_transcribe(port: int, pcm: bytes, rate: int = 16_000, host: str = "127.0.0.1") -> str:
    """``stt.py::async_process_audio_stream``: 1,024-sample chunks, then wait for the transcript."""
    async with AsyncTcpClient(host, port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=rate, width=2, channels=1).event())
        for i in range(0, len(pcm), 2048):
            chunk = AudioChunk(rate=rate, width=2, channels=1, audio=pcm[i : i + 2048])
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        while True:
            event = await asyncio.wait_for(client.read_event(), 20)
            assert event is not None, "connection lost"
            if Transcript.is_type(event.type):
                return Transcript.from_event(event).text


async def ha_tts_once(port: int, text: str, host: str = "127.0.0.1") -> tuple[bytes, int]:
    """``tts.py::async_get_tts_audio``: one ``synthesize``, chunks until ``audio-stop``."""
    async with AsyncTcpClient(host, port) as client:
        await client.write_event(Synthesize(text=text).event())
        audio, rate = bytearray(), 0
        while True:
            event = await asyncio.wait_for(client.read_event(), 20)
            assert event is not None, "connection lost"
            if AudioStop.is_type(event.type):
                return bytes(audio), rate
            if AudioChunk.is_type(event.type):
                chunk = AudioChunk.from_event(event)
                audio += chunk.audio
                rate = chunk.rate


def wait_for_describe(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Poll ``describe`` until the server answers (or its process ends)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with EventSocket("127.0.0.1", port, connect_timeout_s=1.0, idle_timeout_s=5.0) as conn:
                conn.send(WireEvent("describe"))
                while conn.receive().type != "info":
                    pass
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"no describe answer on port {port} within {timeout_s:g} s")


def reference_server(module: str) -> list[str]:
    """The command that runs ``module`` (``wyoming_faster_whisper``...) in this environment, where
    the ``test`` extra installs it beside our own pins."""
    if importlib.util.find_spec(module) is None:
        raise FileNotFoundError(f"{module} is not installed: pip install -e '.[test]'")
    return [sys.executable, "-m", module]


@contextmanager
def started(command: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server until the block ends; its output goes to ``log``."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_describe(port, proc)
            yield proc
        except BaseException:
            sys.stderr.write(log.read_text(errors="replace")[-3000:])
            raise
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def whisper_command(port: int, model_dir: Path, data_dir: Path, *, beam_size: int = 1) -> list[str]:
    """wyoming-faster-whisper on our tiny.en (a local CTranslate2 directory: no download)."""
    return reference_server("wyoming_faster_whisper") + [
        "--uri", f"tcp://127.0.0.1:{port}", "--model", str(model_dir / "whisper-tiny.en"),
        "--data-dir", str(data_dir), "--language", "en", "--stt-library", "faster-whisper",
        "--beam-size", str(beam_size), "--compute-type", "int8", "--cpu-threads", "2", "--local-files-only",
    ]  # fmt: skip


def piper_command(port: int, model_dir: Path, data_dir: Path) -> list[str]:
    """wyoming-piper on our en_US-joe-medium (found in its data dir: no download)."""
    return reference_server("wyoming_piper") + [
        "--uri", f"tcp://127.0.0.1:{port}", "--voice", "en_US-joe-medium",
        "--data-dir", str(model_dir / "piper-en_US-joe-medium"), "--download-dir", str(data_dir),
    ]  # fmt: skip
