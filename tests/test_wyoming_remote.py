"""The remote engines (``asr.engine = "wyoming"``, ``tts.engine = "wyoming"``) against the real
reference servers, wyoming-faster-whisper and wyoming-piper, started once for the module on
loopback ports with our default models; and against small scripted servers for what the
reference servers never do: stall, refuse, send rubbish, send audio at another rate.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest

from assistant.audio.sinks import MemorySink
from assistant.audio.sources import PcmSource
from assistant.config import AsrConfig, Config, TtsConfig
from assistant.daemon import Daemon
from assistant.engines import Engines, load_engines, wyoming_remote
from assistant.engines.wyoming_remote import Backoff, WyomingSynthesizer, WyomingTranscriber
from assistant.errors import ConfigError, StageError
from assistant.pipeline import Pipeline
from assistant.turn.latency import TurnRecord
from assistant.wyoming.protocol import WireEvent, encode, merge_data, parse_header
from tests.mosquitto import free_port
from tests.wyoming_ha import piper_command, started, whisper_command

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parent.parent
QUESTION_WAV = REPO / "examples" / "what-is-the-capital-of-france.wav"


@pytest.fixture(scope="module")
def reference(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """wyoming-faster-whisper and wyoming-piper on our models: (asr url, tts url)."""
    tmp = tmp_path_factory.mktemp("wyoming")
    asr_port, tts_port = free_port(), free_port()
    with (
        started(whisper_command(asr_port, model_dir, tmp / "whisper"), asr_port, tmp / "whisper.log"),
        started(piper_command(tts_port, model_dir, tmp / "piper"), tts_port, tmp / "piper.log"),
    ):
        yield f"tcp://127.0.0.1:{asr_port}", f"tcp://127.0.0.1:{tts_port}"


def remote_config(asr_url: str, tts_url: str, **input_keys: object) -> Config:
    config = Config()
    return replace(
        config,
        asr=replace(config.asr, engine="wyoming", url=asr_url),
        tts=replace(config.tts, engine="wyoming", url=tts_url),
        input=replace(config.input, realtime=False, **input_keys),
    )


async def answer(config: Config, engines: Engines, wav: Path = QUESTION_WAV) -> tuple[TurnRecord, MemorySink]:
    """Run the daemon on one spoken question; the turn's record and what was played."""
    turns: list[TurnRecord] = []
    sink = MemorySink()
    pipeline = Pipeline(config, engines, sink, on_turn=turns.append)
    await Daemon(pipeline).run(PcmSource.from_file(wav, config.input))
    assert len(turns) == 1, turns
    return turns[0], sink


async def test_the_pipeline_answers_through_the_reference_servers(
    reference: tuple[str, str], model_dir: Path
) -> None:
    config = remote_config(*reference)
    engines = load_engines(config, model_dir)
    assert isinstance(engines.asr, WyomingTranscriber) and isinstance(engines.tts, WyomingSynthesizer)
    record, sink = await answer(config, engines)
    assert record.outcome == "answered", record
    assert "capital of france" in record.transcript.lower()
    assert "paris" in record.reply.lower()
    spoken = sink.samples()
    assert sink.rate == 22_050 and len(spoken) / 22_050 > 0.8 and np.abs(spoken).max() > 3000


def test_a_server_without_the_service_is_a_config_error(reference: tuple[str, str]) -> None:
    asr_url, tts_url = reference
    with pytest.raises(ConfigError, match="offers no asr"):
        WyomingTranscriber(AsrConfig(engine="wyoming", url=tts_url))
    with pytest.raises(ConfigError, match="offers no tts"):
        WyomingSynthesizer(TtsConfig(engine="wyoming", url=asr_url))


# -- scripted servers ------------------------------------------------------------------------------


def read_event(stream: BinaryIO) -> WireEvent | None:
    line = stream.readline()
    if not line:
        return None
    header = parse_header(line)
    extra = stream.read(header.data_length)
    payload = stream.read(header.payload_length)
    return WireEvent(header.type, merge_data(header, extra), payload)


Script = Callable[[WireEvent, socket.socket], bool]
"""Answers one event from the client; False ends the connection."""


def describe_then(script: Script) -> Script:
    """``describe`` answered as a server of ASR and TTS; everything else by ``script``."""

    def answer(event: WireEvent, conn: socket.socket) -> bool:
        if event.type == "describe":
            conn.sendall(encode(WireEvent("info", {"asr": [{"name": "x"}], "tts": [{"name": "y"}]})))
            return True
        return script(event, conn)

    return answer


@contextlib.contextmanager
def scripted(script: Script) -> Iterator[tuple[str, list[WireEvent]]]:
    """A threaded server that hands each event to ``script``; yields (url, events seen)."""
    seen: list[WireEvent] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while (event := read_event(self.rfile)) is not None:
                seen.append(event)
                if not script(event, self.request):
                    return

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def stall(release: threading.Event) -> Script:
    def answer(event: WireEvent, conn: socket.socket) -> bool:
        if event.type in ("audio-stop", "synthesize"):
            release.wait(30)
            return False
        return True

    return describe_then(answer)


def test_unreachable_server_fails_fast_while_backing_off() -> None:
    port = free_port()  # nothing listens
    engine = WyomingTranscriber(AsrConfig(engine="wyoming", url=f"tcp://127.0.0.1:{port}"))
    with pytest.raises(StageError, match="cannot reach") as first:
        engine.transcribe(b"\0" * 3200)
    assert first.value.code == "asr_failed"
    start = time.monotonic()
    with pytest.raises(StageError, match="asked again in") as again:
        engine.transcribe(b"\0" * 3200)
    assert again.value.code == "asr_failed" and time.monotonic() - start < 0.05
    assert engine.server.backoff.failures == 1


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    now = [100.0]
    backoff = Backoff(1.0, 8.0, clock=lambda: now[0])
    assert [backoff.failed() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff.wait_s() == 8.0
    now[0] += 8.0
    assert backoff.wait_s() == 0.0
    backoff.succeeded()
    assert backoff.failed() == 1.0


def test_stalled_server(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    with scripted(stall(release)) as (url, _):
        tts = WyomingSynthesizer(TtsConfig(engine="wyoming", url=url))
        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
        start = time.monotonic()
        tts.synthesize("Hello.", lambda pcm: None, stop)  # the stage's deadline sets stop: it returns
        assert 0.25 < time.monotonic() - start < 1.0 and tts.server.backoff.failures == 0

        monkeypatch.setattr(wyoming_remote, "IDLE_TIMEOUT_S", 0.5)
        asr = WyomingTranscriber(AsrConfig(engine="wyoming", url=url))
        with pytest.raises(StageError, match="stalled") as stalled:
            asr.transcribe(b"\0" * 3200)
        assert stalled.value.code == "asr_failed" and asr.server.backoff.failures == 1
        release.set()


def test_refusals_and_rubbish_are_coded_errors() -> None:
    def refuse(event: WireEvent, conn: socket.socket) -> bool:
        if event.type == "synthesize":
            conn.sendall(encode(WireEvent("error", {"code": "voice-not-found", "text": "no such voice"})))
        if event.type == "audio-stop":
            conn.sendall(b"{not json\n")
        return True

    with scripted(describe_then(refuse)) as (url, seen):
        tts = WyomingSynthesizer(TtsConfig(engine="wyoming", url=url, remote_voice="en_GB-x"))
        with pytest.raises(StageError, match=r"refused: \[voice-not-found\] no such voice") as refused:
            tts.synthesize("Hello.", lambda pcm: None)
        assert refused.value.code == "tts_failed"
        assert seen[-1].data == {"text": "Hello.", "voice": {"name": "en_GB-x"}}
        asr = WyomingTranscriber(AsrConfig(engine="wyoming", url=url))
        with pytest.raises(StageError, match="bad event") as rubbish:
            asr.transcribe(b"\0" * 20_000)
        assert rubbish.value.code == "asr_failed"
        kinds = [e.type for e in seen[-6:]]
        assert kinds == [
            "transcribe",
            "audio-start",
            "audio-chunk",
            "audio-chunk",
            "audio-chunk",
            "audio-stop",
        ]
        assert seen[-6].data == {"language": "en"} and seen[-5].data == {
            "rate": 16000,
            "width": 2,
            "channels": 1,
        }


def test_audio_at_another_rate_and_in_stereo_is_converted() -> None:
    tone = (np.sin(np.arange(16_000) * 2 * np.pi * 440 / 16_000) * 10_000).astype("<i2")
    stereo = np.repeat(tone, 2).tobytes()  # 1 s of 16 kHz stereo

    def speak(event: WireEvent, conn: socket.socket) -> bool:
        if event.type == "synthesize":
            fmt = {"rate": 16_000, "width": 2, "channels": 2}
            events = [WireEvent("audio-start", fmt)]
            events += [
                WireEvent("audio-chunk", fmt, stereo[i : i + 4096]) for i in range(0, len(stereo), 4096)
            ]
            conn.sendall(b"".join(encode(e) for e in [*events, WireEvent("audio-stop")]))
        return True

    with scripted(describe_then(speak)) as (url, _):
        tts = WyomingSynthesizer(TtsConfig(engine="wyoming", url=url))
        pieces: list[bytes] = []
        tts.synthesize("A tone.", pieces.append)
    audio = np.frombuffer(b"".join(pieces), dtype="<i2")
    assert abs(len(audio) - 22_050) < 50 and len(pieces) >= 3  # the first piece at once, then >= 250 ms
    assert 9000 < np.abs(audio[1000:-1000]).max() < 10_500


@pytest.mark.parametrize("transcript_ms", [750, 0])
async def test_a_stalled_asr_server_is_abandoned_and_the_user_hears_something_in_time(
    model_dir: Path, transcript_ms: int
) -> None:
    """The ASR server stalls. By default the transcription is abandoned at
    ``latency.transcript_ms`` and the user hears the reprompt (the turn ends ``reprompted``);
    with no transcript deadline, the budget's acknowledgement (synthesized at start by the local
    voice) is heard within the budget, then the turn fails at the ASR deadline as
    ``stage_timeout``."""
    release = threading.Event()
    with scripted(stall(release)) as (url, _):
        config = Config()
        config = replace(
            config,
            asr=replace(config.asr, engine="wyoming", url=url),
            deadlines=replace(config.deadlines, asr_s=1.5),
            latency=replace(config.latency, transcript_ms=transcript_ms),
        )
        engines = load_engines(config, model_dir, llm=False)
        try:
            record, sink = await answer(config, engines)
        finally:
            release.set()
    if transcript_ms:
        assert record.outcome == "reprompted" and "reprompt" in record.actions, record
    else:
        assert record.outcome == "error" and record.error == "stage_timeout"
        assert "ack_played" in record.actions and "stage_timeout" in record.actions
    heard_ms = record.marks["first_audio"] - record.marks["speech_end"]
    assert heard_ms <= config.latency.budget_ms, record.marks
    assert len(sink.turns) >= 1  # the acknowledgement (and the apology), or the reprompt


def test_engine_and_url_keys_are_checked() -> None:
    assert AsrConfig(engine="wyoming", url="tcp://whisper.lan:10300").url == "tcp://whisper.lan:10300"
    for url in (
        "http://whisper.lan:10300",
        "tcp://whisper.lan",
        "tcp://:10300",
        "tcp://h:0",
        "tcp://h:99999",
    ):
        with pytest.raises(ConfigError, match=r"asr.url = .* give tcp://HOST:PORT"):
            AsrConfig(engine="wyoming", url=url)
    AsrConfig(url="not checked while the engine is local")
    with pytest.raises(
        ConfigError, match=r"tts.engine = 'wyomin' is not allowed: choose one of \['piper', 'wyoming'\]"
    ):
        TtsConfig(engine="wyomin")
    with pytest.raises(ConfigError, match="tts.url"):
        TtsConfig(engine="wyoming", url="tcp://piper.lan:port")
