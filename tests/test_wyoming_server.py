"""The daemon's Wyoming server, spoken to by the ``wyoming`` library's own client as Home Assistant's
integration calls it (``homeassistant/components/wyoming``: ``data.py`` describe, ``stt.py``,
``tts.py`` one-shot and streamed, ``assist_satellite.py``), on the real default models.

Also: malformed and oversized events (refused with an ``error``, the connection kept), many
clients at once and one too many, model failures as coded errors, the satellite sharing the
microphone with the pipeline, zeroconf missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.audio.sinks import MemorySink
from assistant.clock import StreamClock
from assistant.config import Config
from assistant.contracts import AsrResult, Synthesizer, Transcriber
from assistant.daemon import Daemon
from assistant.engines import Engines
from assistant.messages import AudioIn, EndOfStream, Message
from assistant.pipeline import Pipeline
from assistant.turn.latency import TurnRecord
from assistant.wyoming.protocol import WireEvent, encode
from assistant.wyoming.server import WyomingServer, advertise
from tests.fakes import FakeSynth, FakeTranscriber
from tests.mosquitto import free_port
from tests.wyoming_ha import (
    AsyncTcpClient,
    AudioChunk,
    AudioStart,
    AudioStop,
    Describe,
    Detection,
    Error,
    Event,
    Info,
    PauseSatellite,
    Ping,
    PipelineStage,
    Played,
    Pong,
    RunPipeline,
    RunSatellite,
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    Transcribe,
    Transcript,
    VoiceStarted,
    VoiceStopped,
    ha_info,
    ha_transcribe,
    ha_tts_once,
)

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent
QUESTION_WAV = REPO / "examples" / "what-is-the-capital-of-france.wav"
REPLY = "Paris is the capital of France. It lies on the Seine. About two million people live there."
PIECE = 640
"""20 ms of 16 kHz mono int16."""


def read_pcm(path: Path) -> tuple[bytes, int]:
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 1
        return wav.readframes(wav.getnframes()), wav.getframerate()


class Microphone:
    """A live-like source: 20 ms pieces of silence, five times faster than real time, with
    whatever ``say`` queued in their place; ends at ``stop``."""

    def __init__(self) -> None:
        self.audio = bytearray()
        self.stopped = False

    def say(self, pcm: bytes, then_ms: int = 1500) -> None:
        self.audio += pcm + bytes(32 * then_ms)

    def stop(self) -> None:
        self.stopped = True

    async def run(self, outbox: asyncio.Queue[Message], clock: StreamClock) -> None:
        clock.start()
        position = 0.0
        while not self.stopped:
            piece = bytes(self.audio[:PIECE]).ljust(PIECE, b"\0")
            del self.audio[:PIECE]
            await outbox.put(AudioIn(piece, position, time.monotonic_ns()))
            position += 20.0
            await asyncio.sleep(0.004)
        clock.ended()
        await outbox.put(EndOfStream())


@contextlib.asynccontextmanager
async def serving(
    engines: Engines,
    *,
    sink: MemorySink | None = None,
    mic: Microphone | None = None,
    listen: str = "always",
    **wyoming: Any,
) -> AsyncIterator[tuple[WyomingServer, Pipeline, list[TurnRecord]]]:
    """A daemon with the Wyoming server on a free loopback port; yields (server, pipeline, turns)."""
    config = Config()
    config = replace(
        config,
        input=replace(config.input, realtime=False),
        listen=replace(config.listen, mode=listen),
        latency=replace(config.latency, ack=False),
        wyoming=replace(config.wyoming, enabled=True, host="127.0.0.1", port=free_port(), **wyoming),
    )
    turns: list[TurnRecord] = []
    pipeline = Pipeline(config, engines, sink, on_turn=turns.append)
    server = WyomingServer(pipeline)
    mic = mic or Microphone()
    daemon = asyncio.ensure_future(Daemon(pipeline, [("wyoming", server.run)]).run(server.tap(mic)))
    try:
        await asyncio.wait_for(server.ready.wait(), 10)
        yield server, pipeline, turns
    finally:
        mic.stop()
        await asyncio.wait_for(daemon, 30)


@pytest.fixture
def engines_no_llm(engines: Engines) -> Engines:
    return Engines(asr=engines.asr, tts=engines.tts)


# -- describe, transcribe, synthesize ------------------------------------------------------------


async def test_describe_lists_asr_tts_and_satellite(engines_no_llm: Engines) -> None:
    async with serving(engines_no_llm, sink=MemorySink(), name="kitchen", area="Kitchen") as (server, _, _):
        info = await ha_info(server.port or 0)
    assert info.asr[0].installed and info.asr[0].models[0].name == "whisper-tiny.en"
    assert info.asr[0].models[0].languages == ["en"]
    tts = info.tts[0]
    assert tts.supports_synthesize_streaming and tts.voices[0].languages == ["en_US"]
    assert (
        info.satellite is not None and info.satellite.name == "kitchen" and info.satellite.area == "Kitchen"
    )

    async with serving(engines_no_llm, satellite=False, tts=False) as (server, _, _):  # no sink anyway
        info = await ha_info(server.port or 0)
    assert info.asr and not info.tts and info.satellite is None


async def test_transcribes_a_spoken_question_at_any_rate(
    engines_no_llm: Engines, espeak: Any, tmp_path: Path
) -> None:
    pcm, rate = read_pcm(QUESTION_WAV)
    async with serving(engines_no_llm) as (server, _, _):
        port = server.port or 0
        text = await ha_transcribe(port, pcm, rate)
        assert "capital of france" in text.lower()
        # another voice, at 22,050 Hz: resampled as it arrives
        speech = espeak("Turn on the kitchen lights.", tmp_path)
        from assistant.audio.convert import pcm16_to_float, resample

        high = (resample(pcm16_to_float(speech.tobytes()), 16_000, 22_050) * 32767).astype("<i2").tobytes()
        text = await ha_transcribe(port, high, 22_050)
        assert "kitchen lights" in text.lower()


async def test_synthesizes_once_and_streamed(engines_no_llm: Engines) -> None:
    async with serving(engines_no_llm) as (server, _, _):
        port = server.port or 0
        once, rate = await ha_tts_once(port, REPLY)
        assert rate == 22_050 and len(once) / 2 / rate > 3.0

        # tts.py::async_stream_tts_audio: start, chunks as the LLM writes them, the whole text
        # again (for servers that do not stream), stop; audio read concurrently until stopped
        client = AsyncTcpClient("127.0.0.1", port)
        await client.connect()
        first_audio = asyncio.Event()
        sent_at: dict[str, float] = {}

        async def write() -> None:
            await client.write_event(SynthesizeStart().event())
            for word in REPLY.split(" "):
                await client.write_event(SynthesizeChunk(text=word + " ").event())
                if word == "France.":  # the first sentence is complete: its audio comes while we wait
                    await asyncio.wait_for(first_audio.wait(), 10)
                    sent_at["rest"] = time.monotonic()
            await client.write_event(Synthesize(text=REPLY).event())
            await client.write_event(SynthesizeStop().event())

        writer = asyncio.ensure_future(write())
        chunks: list[tuple[float, bytes]] = []
        types: list[str] = []
        try:
            while True:
                event = await asyncio.wait_for(client.read_event(), 20)
                assert event is not None
                types.append(event.type)
                if AudioChunk.is_type(event.type):
                    chunks.append((time.monotonic(), AudioChunk.from_event(event).audio))
                    first_audio.set()
                elif SynthesizeStopped.is_type(event.type):
                    break
            await writer
        finally:
            writer.cancel()
            await client.disconnect()
    assert types[0] == "audio-start" and types[-2:] == ["audio-stop", "synthesize-stopped"]
    assert "error" not in types
    assert chunks[0][0] < sent_at["rest"], (
        "the first sentence's audio came before the rest of the text was sent"
    )
    streamed = b"".join(audio for _, audio in chunks)
    assert len(chunks) > 10 and abs(len(streamed) - len(once)) / len(once) < 0.15  # the same words, once


# -- refusals --------------------------------------------------------------------------------------


class RawClient:
    """A plain socket to the server, for what no well-behaved client sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def event(self) -> Event:
        line = await asyncio.wait_for(self.reader.readline(), 10)
        assert line, "the server closed the connection"
        header = json.loads(line)
        data = header.get("data") or {}
        if header.get("data_length"):
            data.update(json.loads(await self.reader.readexactly(header["data_length"])))
        payload = (
            await self.reader.readexactly(header["payload_length"]) if header.get("payload_length") else None
        )
        return Event(header["type"], data, payload)

    async def error(self) -> Error:
        event = await self.event()
        assert Error.is_type(event.type), event
        return Error.from_event(event)


@contextlib.asynccontextmanager
async def raw(port: int) -> AsyncIterator[RawClient]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield RawClient(reader, writer)
    finally:
        writer.close()


async def test_malformed_and_oversized_events_are_refused_and_the_connection_stays(
    engines_no_llm: Engines,
) -> None:
    async with (
        serving(engines_no_llm, max_payload_bytes=8192) as (server, _, _),
        raw(server.port or 0) as client,
    ):
        for line, code, words in (
            (b"this is not json\n", "bad_event", "not JSON"),
            (b"[1, 2]\n", "bad_event", "not an object"),
            (b'{"type": 7}\n', "bad_event", "type"),
            (b'{"type": "audio-chunk", "payload_length": -1}\n', "bad_event", "payload_length"),
            (b'{"type": "synthesize", "data": "hello"}\n', "bad_event", "not an object"),
            (b'{"type": "synthesize", "data": {"text": 3}}\n', "bad_event", "text"),
        ):
            await client.send(line)
            error = await client.error()
            assert error.code == code and words in error.text, (line, error)
        # audio it cannot use
        await client.send(
            encode(WireEvent("audio-chunk", {"rate": 16000, "width": 4, "channels": 1}, b"\0" * 64))
        )
        assert (await client.error()).code == "audio_invalid"
        # a payload over the limit: refused, its bytes skipped, the next event answered
        big = WireEvent("audio-chunk", {"rate": 16000, "width": 2, "channels": 1}, b"\1" * 100_000)
        await client.send(encode(big) + encode(WireEvent("ping", {"text": "still there?"})))
        error = await client.error()
        assert error.code == "too_long" and "100000 bytes" in error.text
        pong = await client.event()
        assert Pong.is_type(pong.type) and Pong.from_event(pong).text == "still there?"
        # a header line over the limit
        await client.send(b'{"type": "' + b"x" * 70_000 + b'"}\n')
        assert (await client.error()).code == "too_long"
        await client.send(encode(WireEvent("describe")))
        assert Info.is_type((await client.event()).type)
        # text over the limit: refused, and the end still comes so a waiting client finishes
        await client.send(encode(WireEvent("synthesize", {"text": "a" * 6000})))
        assert (await client.error()).code == "too_long"
        assert AudioStop.is_type((await client.event()).type)


async def test_many_clients_at_once_and_one_too_many(engines_no_llm: Engines) -> None:
    pcm, rate = read_pcm(QUESTION_WAV)
    async with serving(engines_no_llm, max_clients=3) as (server, _, _):
        port = server.port or 0
        texts = await asyncio.gather(*(ha_transcribe(port, pcm, rate) for _ in range(3)))
        assert all("capital of france" in text.lower() for text in texts)
        async with raw(port) as a, raw(port) as b, raw(port) as c:
            await a.send(encode(WireEvent("ping")))
            await b.send(encode(WireEvent("ping")))
            await c.send(encode(WireEvent("ping")))
            for client in (a, b, c):
                assert Pong.is_type((await client.event()).type)
            async with raw(port) as d:
                error = await d.error()
                assert error.code == "busy"
                assert await d.reader.read() == b""  # and closed
        assert server.refused == 1


class Failing(Transcriber, Synthesizer):
    """Engines that fail (``error``) or hang (``delay_s``)."""

    sample_rate = 22_050

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def transcribe(self, pcm: bytes, deadline: float | None = None) -> AsrResult:
        time.sleep(self.delay_s)
        raise RuntimeError("the model broke")

    def synthesize(
        self, text: str, on_audio: Callable[[bytes], None], stop: threading.Event | None = None
    ) -> None:
        if text.startswith("It"):
            raise RuntimeError("the voice broke")
        on_audio(b"\1\0" * 2000)


async def test_model_failures_are_coded_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    engine = Failing()
    async with serving(Engines(asr=engine, tts=engine)) as (server, pipeline, _):
        port = server.port or 0
        async with raw(port) as client:  # a failed transcription: its error, then the connection closes
            await client.send(
                encode(WireEvent("audio-chunk", {"rate": 16000, "width": 2, "channels": 1}, b"\0" * 3200))
            )
            await client.send(encode(WireEvent("audio-stop")))
            error = await client.error()
            assert error.code == "internal" and "the model broke" in error.text, error
            assert await client.reader.read() == b""
        pipeline.config = replace(pipeline.config, deadlines=replace(pipeline.config.deadlines, asr_s=0.2))
        engine.delay_s = 1.0
        async with raw(port) as client:
            await client.send(
                encode(WireEvent("audio-chunk", {"rate": 16000, "width": 2, "channels": 1}, b"\0" * 3200))
            )
            await client.send(encode(WireEvent("audio-stop")))
            assert (await client.error()).code == "stage_timeout"
        async with raw(port) as client:  # synthesis failing mid-stream: error, the rest skipped, the end
            await client.send(encode(WireEvent("synthesize-start")))
            await client.send(encode(WireEvent("synthesize-chunk", {"text": REPLY})))
            await client.send(encode(WireEvent("synthesize-stop")))
            types = []
            while not types or types[-1] != "synthesize-stopped":
                event = await client.event()
                types.append(event.type)
                if event.type == "error":
                    assert Error.from_event(event).code == "tts_failed"
            assert types[0] == "audio-start" and "error" in types and types[-2] == "audio-stop"


async def test_zeroconf_missing_is_a_log_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    real = importlib.import_module

    def no_zeroconf(name: str, package: str | None = None) -> Any:
        if name.startswith("zeroconf"):
            raise ImportError("No module named 'zeroconf'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_zeroconf)
    caplog.set_level(logging.INFO)
    async with advertise(Config().wyoming, 10700):
        pass
    assert "pip install zeroconf" in caplog.text


# -- the satellite -----------------------------------------------------------------------------------


async def test_satellite_round_trip_as_home_assistant(engines: Engines) -> None:
    """Home Assistant runs the satellite: our microphone's question goes to it (the local pipeline
    hears silence meanwhile), it transcribes it (here: with our own server, as its speech-to-text),
    sends the transcript and a spoken reply, which plays on our sink; after ``pause-satellite``
    the pipeline has the microphone again and answers locally."""
    question, _ = read_pcm(QUESTION_WAV)
    sink, mic = MemorySink(), Microphone()
    async with serving(engines, sink=sink, mic=mic) as (server, pipeline, turns):
        port = server.port or 0
        async with AsyncTcpClient("127.0.0.1", port) as satellite:
            await satellite.write_event(RunSatellite().event())
            await satellite.write_event(Describe().event())
            first = await asyncio.wait_for(satellite.read_event(), 5)
            assert first is not None and Info.is_type(first.type)
            await satellite.write_event(Ping().event())
            assert (pong := await satellite.read_event()) is not None and Pong.is_type(pong.type)

            mic.say(question)
            events: list[Event] = []
            while not events or not AudioStop.is_type(events[-1].type):
                event = await asyncio.wait_for(satellite.read_event(), 10)
                assert event is not None
                events.append(event)
            kinds = [e.type for e in events]
            assert kinds[:5] == ["detection", "run-pipeline", "voice-started", "audio-start", "audio-chunk"]
            assert kinds[-2:] == ["voice-stopped", "audio-stop"]
            assert Detection.from_event(events[0]).name == "speech"
            run = RunPipeline.from_event(events[1])
            assert run.start_stage == PipelineStage.ASR and run.end_stage == PipelineStage.TTS
            assert VoiceStarted.from_event(events[2]).timestamp is not None
            assert VoiceStopped.from_event(events[-2]).timestamp is not None
            streamed = b"".join(AudioChunk.from_event(e).audio for e in events if AudioChunk.is_type(e.type))
            assert 1.5 < len(streamed) / 32_000 < 4.0

            # Home Assistant's speech-to-text (our own server's), then its answer, as it streams it
            text = await ha_transcribe(port, streamed)
            assert "capital of france" in text.lower()
            await satellite.write_event(Transcribe(language="en").event())
            await satellite.write_event(Transcript(text=text).event())
            reply, rate = await ha_tts_once(port, "Paris.")
            await satellite.write_event(Synthesize(text="Paris.").event())
            await satellite.write_event(AudioStart(rate=rate, width=2, channels=1, timestamp=0).event())
            for i in range(0, len(reply), 2048):
                await satellite.write_event(
                    AudioChunk(rate=rate, width=2, channels=1, audio=reply[i : i + 2048]).event()
                )
            await satellite.write_event(AudioStop().event())
            while not Played.is_type((event := await asyncio.wait_for(satellite.read_event(), 10)).type):  # type: ignore[union-attr]
                pass
            assert sink.turns == [reply] and sink.rate == rate
            assert turns == [], "the local pipeline heard silence while the satellite ran"

            await satellite.write_event(PauseSatellite().event())
            await asyncio.sleep(0.1)
            assert server.hub is not None and server.hub.session is None
            mic.say(question)
            for _ in range(300):
                if turns:
                    break
                await asyncio.sleep(0.05)
            # the local pipeline heard the question (Whisper tiny.en on the live path, without its
            # temperature fallback, may end it in "friends")
            assert turns and "what is the capital of" in turns[0].transcript.lower()
            assert len(sink.turns) == 2, "answered locally, on the same sink"


class Speakers(MemorySink):
    """A sink that also counts what it was handed, piece by piece."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    async def write(self, pcm: bytes, sample_rate: int) -> None:
        self.written += len(pcm)
        await super().write(pcm, sample_rate)


def fake_engines() -> Engines:
    return Engines(asr=FakeTranscriber([]), tts=FakeSynth())


async def next_event(client: AsyncTcpClient, timeout_s: float = 10.0) -> Event:
    event = await asyncio.wait_for(client.read_event(), timeout_s)
    assert event is not None, "the satellite closed the connection"
    return event


async def run_of(client: AsyncTcpClient) -> list[Event]:
    """The events of one run, up to its ``audio-stop``."""
    events = [await next_event(client)]
    while not AudioStop.is_type(events[-1].type):
        events.append(await next_event(client))
    return events


@contextlib.asynccontextmanager
async def home_assistant(port: int) -> AsyncIterator[AsyncTcpClient]:
    """A connection that runs the satellite, as ``assist_satellite.py`` opens it."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(RunSatellite().event())
        await client.write_event(Describe().event())
        assert Info.is_type((await next_event(client)).type)
        yield client


async def test_satellite_listen_modes_and_mute() -> None:
    question, _ = read_pcm(QUESTION_WAV)
    mic = Microphone()
    async with (
        serving(fake_engines(), sink=MemorySink(), mic=mic, listen="wake") as (server, pipeline, _),
        home_assistant(server.port or 0) as ha,
    ):
        mic.say(question)
        events = await run_of(ha)  # wake mode: Home Assistant's wake word engine decides
        assert events[0].type == "run-pipeline" and "detection" not in [e.type for e in events]
        assert RunPipeline.from_event(events[0]).start_stage == PipelineStage.WAKE

        pipeline.set_muted(True)  # muted: nothing goes out
        mic.say(question)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ha.read_event(), 1.0)
        pipeline.set_muted(False)
        mic.say(question)
        assert (await run_of(ha))[0].type == "run-pipeline"

    mic = Microphone()
    async with (
        serving(fake_engines(), sink=MemorySink(), mic=mic, listen="push") as (server, pipeline, _),
        home_assistant(server.port or 0) as ha,
    ):
        assert pipeline.muted
        pipeline.listen()  # push-to-talk
        mic.say(question)
        events = await run_of(ha)
        assert Detection.from_event(events[0]).name == "push"
        assert RunPipeline.from_event(events[1]).start_stage == PipelineStage.ASR
        assert pipeline.muted, "one run per push"


async def test_speech_during_a_reply_interrupts_it() -> None:
    question, _ = read_pcm(QUESTION_WAV)
    mic, sink = Microphone(), Speakers()
    reply = (np.sin(np.arange(22_050 * 2) / 10) * 8000).astype("<i2").tobytes()
    fmt = {"rate": 22_050, "width": 2, "channels": 1}
    async with (
        serving(fake_engines(), sink=sink, mic=mic) as (server, _, _),
        home_assistant(server.port or 0) as ha,
    ):
        await ha.write_event(AudioStart(**fmt).event())
        half = 2048 * 21  # about half, in whole chunks
        for i in range(0, half, 2048):
            await ha.write_event(AudioChunk(audio=reply[i : i + 2048], **fmt).event())
        for _ in range(100):
            if sink.written >= half:
                break
            await asyncio.sleep(0.01)
        mic.say(question)  # the user talks over the reply
        assert Detection.is_type((await next_event(ha)).type)
        for i in range(half, len(reply), 2048):
            await ha.write_event(AudioChunk(audio=reply[i : i + 2048], **fmt).event())
        await ha.write_event(AudioStop().event())
        kinds = [e.type for e in await run_of(ha)]
        while "played" not in kinds:
            kinds.append((await next_event(ha)).type)
    assert sink.written == half, "the rest of the reply was skipped"
    assert sink.turns[0] == reply[:half]


def test_run_with_wyoming_serves_without_a_microphone(model_dir: Path, tmp_path: Path) -> None:
    """``assistant run --wyoming tcp://HOST:PORT`` alone: ASR and TTS are served; no satellite
    without ``--input``; SIGTERM stops it cleanly."""
    import signal
    import subprocess
    import sys

    from tests.wyoming_ha import wait_for_describe

    port = free_port()
    command = [sys.executable, "-m", "assistant", "-v", "run", "--wyoming", f"tcp://127.0.0.1:{port}"]
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_describe(port, proc)
            info = asyncio.run(ha_info(port))
            assert info.asr and info.tts and info.satellite is None
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
    text = log.read_text()
    assert code == 0, text
    assert f"serving asr, tts on 127.0.0.1:{port}" in text and "no satellite" in text


def test_wyoming_keys_are_checked() -> None:
    from assistant.cli import _with_wyoming
    from assistant.config import WyomingConfig
    from assistant.errors import ConfigError

    config = _with_wyoming(Config(), "tcp://0.0.0.0:10700")
    assert config.wyoming.enabled and (config.wyoming.host, config.wyoming.port) == ("0.0.0.0", 10700)
    with pytest.raises(ConfigError, match=r"--wyoming = 'http://h:1' is not allowed: give tcp://HOST:PORT"):
        _with_wyoming(Config(), "http://h:1")
    with pytest.raises(ConfigError, match="wyoming.max_payload_bytes = 100 is out of range"):
        WyomingConfig(max_payload_bytes=100)
    with pytest.raises(ConfigError, match="wyoming.name is empty"):
        WyomingConfig(name=" ")


async def test_audio_over_the_limit_is_cut_and_the_rest_transcribed() -> None:
    asr = FakeTranscriber(["what is the capital of france"])
    async with (
        serving(Engines(asr=asr, tts=FakeSynth()), max_audio_s=1.0) as (server, _, _),
        raw(server.port or 0) as client,
    ):
        fmt = {"rate": 48_000, "width": 2, "channels": 2}  # 2 s of 48 kHz stereo
        chunks = [WireEvent("audio-chunk", fmt, b"\1\0" * 9600) for _ in range(20)]
        await client.send(encode(WireEvent("audio-start", fmt)) + b"".join(map(encode, chunks)))
        await client.send(encode(WireEvent("audio-stop")))
        error = await client.error()
        assert error.code == "too_long" and "over 1 s" in error.text
        assert Transcript.from_event(await client.event()).text == "what is the capital of france"
    assert asr.calls == [32_000], "1 s of 16 kHz mono int16"


async def test_our_remote_engines_use_another_assistant(engines_no_llm: Engines) -> None:
    """``asr.engine``/``tts.engine = "wyoming"`` pointed at another assistant's ``--wyoming``."""
    from assistant.config import AsrConfig, TtsConfig
    from assistant.engines.wyoming_remote import WyomingSynthesizer, WyomingTranscriber

    question, _ = read_pcm(QUESTION_WAV)
    async with serving(engines_no_llm) as (server, _, _):
        url = f"tcp://127.0.0.1:{server.port}"
        asr = await asyncio.to_thread(WyomingTranscriber, AsrConfig(engine="wyoming", url=url))
        result = await asyncio.to_thread(asr.transcribe, question)
        assert "capital of france" in result.text.lower()
        tts = await asyncio.to_thread(WyomingSynthesizer, TtsConfig(engine="wyoming", url=url))
        pieces: list[bytes] = []
        await asyncio.to_thread(tts.synthesize, "Paris is the capital of France.", pieces.append)
    assert len(pieces) >= 2 and len(b"".join(pieces)) / 2 / tts.sample_rate > 1.0
