"""The wake word: the gate in front of the VAD (with a scripted detector), the real microWakeWord
model on espeak-ng speech, the whole pipeline on real audio (VAD, Whisper) in several voices,
follow-ups, ``--wake``, and what happens where the package is missing."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.audio.sinks import MemorySink
from assistant.audio.sources import PcmSource
from assistant.bench.corpus import Voice, build_corpus
from assistant.bench.wer import wer
from assistant.config import Config, IntentsConfig, ListenConfig
from assistant.contracts import AsrResult, Transcriber
from assistant.daemon import Daemon
from assistant.errors import ConfigError, ModelCorruptError, ModelMissingError
from assistant.events import Event, State, StateChanged, WakeDetected
from assistant.messages import AudioIn, Message, Utterance, WakeWordHeard
from assistant.mqtt.protocol import Topics, event_messages
from assistant.pipeline import Engines, Pipeline
from assistant.stages.wake import LISTEN_AFTER_WAKE_S, STOP_LISTEN_S, WakeStage
from assistant.turn.activation import Activation
from assistant.turn.latency import TurnRecord
from assistant.turn.reports import ReportLog, WakeClosed, WakeHeard
from assistant.wake import Detection, WakeDetector, earcon, running, word_end, word_gap

from .fakes import FakeChat, FakeSynth

RATE = 16_000
PIECE = 320  # 20 ms pieces, as a microphone gives them
WAKE = "Okay nabu, what time is it?"
WAKE_LIGHTS = "Okay nabu, turn on the kitchen lights."
WAKE_ALONE = "Okay nabu."
VOICES = (
    Voice("en-us", "espeak", "en-us", 150, 50),
    Voice("en-gb", "espeak", "en-gb", 150, 50),
    Voice("en-gb-x-rp", "espeak", "en-gb-x-rp", 130, 40),
    Voice("en-029", "espeak", "en-029", 160, 50),
    Voice("en-us+m4", "espeak", "en-us+m4", 155, 45),
)
"""espeak-ng voices in which the model hears "okay nabu" and Whisper tiny.en the question after
it (``bench --wake`` has the misses per voice: espeak-ng's female variants are not heard)."""


def heard_as(heard: list[str], said: list[str]) -> bool:
    """Each of ``said`` was heard, in order, within a word in five (piper's takes vary: one CI run
    heard "pert on the kitchen lights")."""
    return len(heard) == len(said) and all(wer(s, h) <= 0.2 for s, h in zip(said, heard, strict=True))


OTHERS = ("What is the capital of France?", "Turn on the kitchen lights.", "Okay, so what is the weather?")
"""Speech without the wake word. ("Okay, now what time is it?" is too near: the model hears "okay
nabu" in it in some voices; ``bench --wake`` counts such false wakes on an hour of speech.)"""


def micro() -> WakeDetector:
    pytest.importorskip("pymicro_wakeword")
    from assistant.engines.micro_wake import MicroWakeEngine

    return MicroWakeEngine("okay_nabu")


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], bytes]:
    """(text, voice) -> 16 kHz int16 speech with 300 ms of silence around it."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    items = build_corpus(
        Path("/nonexistent"),  # no piper voice: espeak-ng only
        questions=(WAKE, WAKE_LIGHTS, WAKE_ALONE, *OTHERS),
        voices=VOICES,
        snr_db=None,
        cache_dir=tmp_path_factory.mktemp("corpus"),
    )
    return {(item.text, item.voice): item.pcm for item in items}


def silence(ms: int) -> bytes:
    return bytes(2 * RATE * ms // 1000)


def pieces(pcm: bytes, start_ms: float = 0.0) -> list[AudioIn]:
    size = 2 * PIECE
    return [AudioIn(pcm[i : i + size], start_ms + i / 32) for i in range(0, len(pcm), size)]


# -- the gate, with a scripted detector ---------------------------------------------------------


class Scripted(WakeDetector):
    """Fires at the given sample positions."""

    def __init__(self, at: list[int]) -> None:
        self.at = at
        self.fed = 0
        self.heard = bytearray()
        self.name, self.wake_word = "test", "Test"

    def process(self, pcm: bytes) -> list[Detection]:
        self.heard += pcm
        start, self.fed = self.fed, self.fed + len(pcm) // 2
        return [Detection(at, 0.9) for at in self.at if start < at <= self.fed]

    def reset(self) -> None:
        self.fed = 0


class Notices:
    def __init__(self) -> None:
        self.played: list[tuple[bytes, int]] = []

    async def play_notice(self, pcm: bytes, rate: int) -> None:
        self.played.append((pcm, rate))


@dataclass
class Host:
    state: State = State.IDLE
    playing: bool = False
    muted: bool = False
    output: Notices | None = None
    tts: Any = None


def gate(at: list[int], **listen: Any) -> tuple[WakeStage, Scripted, Host]:
    detector, host = Scripted(at), Host()
    return WakeStage(detector, ListenConfig(mode="wake", **listen), ReportLog(), host), detector, host


def audio(messages: list[Message]) -> bytes:
    return b"".join(m.pcm for m in messages if isinstance(m, AudioIn))


def passed(stage: WakeStage, items: list[AudioIn]) -> bytes:
    return b"".join(audio(stage.feed(item)) for item in items)


def test_nothing_passes_until_the_wake_word_then_the_question_from_the_word_s_end() -> None:
    word = (np.sin(np.arange(8000) / 3) * 9000).astype("<i2").tobytes()  # 500 ms "wake word"
    question = (np.sin(np.arange(16000) / 5) * 9000).astype("<i2").tobytes()
    # the user pauses 100 ms after the word; the detector is sure 200 ms after the word's end
    stream = silence(1000) + word + silence(100) + question + silence(500)
    at = (1000 + 500 + 200) * 16
    stage, detector, _ = gate([at])
    sent = [m for item in pieces(stream) for m in stage.feed(item)]
    out = audio(sent)
    assert stage.woken == 1 and bytes(detector.heard) == stream
    assert len(out) == len(stream)  # held back by HOLD_MS while asleep, all handed on once woken
    heard = np.frombuffer(out, dtype="<i2")
    first = int(np.flatnonzero(heard)[0])
    assert 1500 * 16 <= first <= 1600 * 16 + 1  # from the pause after the word (sin(0) = 0)
    assert heard[1600 * 16 :].tobytes() == stream[2 * 1600 * 16 : len(out)]
    # the VAD is told where the word was heard, after the audio up to there
    [mark] = [m for m in sent if isinstance(m, WakeWordHeard)]
    assert mark.at_ms == pytest.approx(1700, abs=1)
    assert len(audio(sent[: sent.index(mark)])) >= 2 * 1700 * 16
    [report] = stage.channel.of(WakeHeard)  # type: ignore[attr-defined]
    assert (report.wake_word, report.at_ms) == ("Test", pytest.approx(1700, abs=1))


def test_word_gap_finds_the_dip_between_the_word_and_the_question() -> None:
    tone = (np.sin(np.arange(4000) / 4) * 8000).astype("<i2").tobytes()
    dip = (np.sin(np.arange(480) / 4) * 300).astype("<i2").tobytes()  # 30 ms, no real pause
    audio = tone + dip + tone  # ends where the detector fired: 250 ms into the question
    gap = word_gap(audio)
    assert 4000 <= gap <= 4000 + 480 - 320


def test_word_end_takes_the_pause_after_the_word_when_the_detector_fires_before_its_end() -> None:
    """ "na", the closure of the "b", "bu" still sounding when the detector is sure, then the
    pause: the end of the word is the pause, not the closure (which left "bu" to be heard)."""

    def tone(ms: int, level: float) -> bytes:
        return (np.sin(np.arange(16 * ms) / 4) * level).astype("<i2").tobytes()

    closure, pause = 300, 300 + 30 + 150
    audio = tone(300, 9000) + tone(30, 60) + tone(150, 6000) + silence(300) + tone(200, 9000)
    at = (300 + 30 + 120) * 16  # sure 30 ms before "bu" ends
    stretch_from = at - 350 * 16
    before = stretch_from + word_gap(audio[2 * stretch_from : 2 * at])
    assert closure * 16 <= before <= (closure + 10) * 16  # what the stage took before
    end = stretch_from + word_end(audio[2 * stretch_from : 2 * (at + 150 * 16)], at - stretch_from)
    assert pause * 16 <= end <= (pause + 20) * 16
    # a detection after the word (in the pause) keeps the end found before it
    late = (pause + 100) * 16
    found = late - 350 * 16 + word_end(audio[2 * (late - 350 * 16) : 2 * (late + 150 * 16)], 350 * 16)
    assert pause * 16 <= found < (pause + 300) * 16
    # no pause after the word ("okay nabu what time" in one breath): a 40 ms gap is a closure
    # inside the question's first word, not the word's end
    run_on = tone(300, 9000) + tone(30, 60) + tone(180, 6000) + tone(40, 60) + tone(300, 9000)
    at = (300 + 30 + 200) * 16
    end = at - 350 * 16 + word_end(run_on[2 * (at - 350 * 16) : 2 * (at + 150 * 16)], 350 * 16)
    assert end == at - 350 * 16 + word_gap(run_on[2 * (at - 350 * 16) : 2 * at])


def test_the_gate_closes_after_the_listening_window_and_reopens_for_follow_ups() -> None:
    stage, _, host = gate([16_000], follow_up_s=2.0)
    feed = pieces(silence(10_000))
    for item in feed[: 1 + int(LISTEN_AFTER_WAKE_S * 50)]:
        stage.feed(item)
    assert stage.listening  # woken at 1 s: open for LISTEN_AFTER_WAKE_S
    for item in feed[1 + int(LISTEN_AFTER_WAKE_S * 50) : 60 + int(LISTEN_AFTER_WAKE_S * 50)]:
        stage.feed(item)
    assert not stage.listening
    log: ReportLog = stage.channel  # type: ignore[assignment]
    assert len(log.of(WakeClosed)) == 1  # the controller hears the gate close (idle again)
    host.state = State.SPEAKING  # a reply (to a typed question, say) plays: open while it does
    stage.feed(AudioIn(silence(20), 0.0))
    assert stage.listening
    host.state = State.IDLE
    for _ in range(100):  # the follow-up window: 2 s from the first idle piece on
        stage.feed(AudioIn(silence(20), 0.0))
        assert stage.listening
    stage.feed(AudioIn(silence(20), 0.0))
    assert not stage.listening and len(log.of(WakeClosed)) == 2


def test_while_the_speaker_plays_the_gate_opens_for_the_stop_word_but_is_not_awake() -> None:
    stage, _, host = gate([])
    pcm = (np.ones(320) * 3000).astype("<i2").tobytes()
    assert audio(stage.feed(AudioIn(pcm, 0.0))) == b""  # asleep: held back, then silence
    host.playing = True  # an alarm rings (no turn: the state is idle)
    assert audio(stage.feed(AudioIn(pcm, 20.0))).endswith(pcm)
    assert stage.listening and not stage.awake
    host.playing = False
    for _ in range(int(STOP_LISTEN_S * 50) - 1):  # open a little longer: the user may be mid-word
        stage.feed(AudioIn(silence(20), 0.0))
        assert stage.listening
    stage.feed(AudioIn(silence(20), 0.0))
    assert not stage.listening
    off, _, off_host = gate([], stop_word=False)
    off_host.playing = True
    off.feed(AudioIn(pcm, 0.0))
    assert not off.listening


async def test_earcon_plays_on_detection_and_a_muted_microphone_is_not_heard() -> None:
    stage, detector, host = gate([8000], wake_earcon=True)
    host.output, host.muted = Notices(), True
    loud = (np.ones(16_000) * 5000).astype("<i2").tobytes()
    stage.feed(AudioIn(loud, 0.0))
    assert not any(detector.heard)  # muted: the detector heard silence
    await asyncio.sleep(0)
    assert len(host.output.played) == 1 and host.output.played[0][1] == 22_050


def test_other_modes_pass_everything_at_once() -> None:
    stage, _, _ = gate([])
    stage.reconfigure(ListenConfig(mode="always"))
    pcm = (np.ones(320) * 100).astype("<i2").tobytes()
    assert audio(stage.feed(AudioIn(pcm, 0.0))) == pcm


def test_activation_with_the_model_admits_all_and_strips_a_wake_word_heard() -> None:
    act = Activation(ListenConfig(mode="wake", wake_engine="micro"))
    assert act.admit("What time is it?", 0.0) == "What time is it?"
    assert act.admit("Okay, Nabu, what time is it?", 0.0) == "what time is it?"
    assert act.admit("OK Nabu. Turn on the lights.", 0.0) == "Turn on the lights."
    assert act.admit("Nabu, what time is it?", 0.0) == "what time is it?"
    assert act.admit("Okay Nabu.", 0.0) is None
    assert act.admit("Okay, turn it off.", 0.0) == "Okay, turn it off."
    # phrase mode is what it was (the auto engine without a model runs as phrase)
    assert Activation(ListenConfig(mode="wake")).admit("What time is it?", 0.0) is None


def test_config_keys_and_the_running_engine() -> None:
    with pytest.raises(ConfigError, match=r"listen.wake_engine = 'porcupine' is not allowed"):
        ListenConfig(wake_engine="porcupine")
    ListenConfig(mode="wake", wake_engine="micro", wake_phrases=())  # no phrases needed
    with pytest.raises(ConfigError, match="wake_phrases is empty"):
        ListenConfig(mode="wake", wake_engine="phrase", wake_phrases=())
    config = replace(Config(), listen=ListenConfig(mode="wake"))
    assert running(config, detector=True).listen.wake_engine == "micro"
    assert running(config, detector=False).listen.wake_engine == "phrase"


def test_wake_is_published_on_mqtt() -> None:
    from assistant.config import MqttConfig

    config = MqttConfig()
    [msg] = event_messages(WakeDetected("Okay Nabu", "okay_nabu", 1234.56, 0.91), Topics(config), config)
    assert msg.topic == "assistant/default/wake" and msg.retain is False
    assert (
        msg.payload
        == '{"wake_word": "Okay Nabu", "model": "okay_nabu", "at_ms": 1234.6, "probability": 0.91}'
    )


def test_wake_is_a_hermes_hotword() -> None:
    from assistant.config import MqttConfig
    from assistant.mqtt.hermes import Hermes

    [msg] = Hermes(MqttConfig(hermes=True)).on_event(WakeDetected("Okay Nabu", "okay_nabu", 10.0, 0.9))
    assert msg.topic == "hermes/hotword/okay_nabu/detected"
    body = json.loads(msg.payload)
    assert body["modelId"] == "okay_nabu" and body["siteId"] == "default"
    assert Hermes(MqttConfig(hermes=True)).on_event(WakeDetected("X", "a+b", 10.0, 0.9)) == []


# -- the real model --------------------------------------------------------------------------


@pytest.mark.parametrize("voice", [v.name for v in VOICES])
def test_the_model_hears_okay_nabu_and_nothing_else(spoken: dict[tuple[str, str], bytes], voice: str) -> None:
    detector = micro()
    for text in (WAKE, *OTHERS):
        detector.reset()
        found = [
            d for piece in pieces(spoken[(text, voice)] + silence(500)) for d in detector.process(piece.pcm)
        ]
        assert len(found) == (text == WAKE), (text, found)


def test_a_model_of_one_s_own_by_path(tmp_path: Path) -> None:
    pytest.importorskip("pymicro_wakeword")
    import pymicro_wakeword

    from assistant.engines.micro_wake import MicroWakeEngine

    shipped = Path(pymicro_wakeword.__file__).parent / "models"
    shutil.copy(shipped / "okay_nabu.tflite", tmp_path / "mine.tflite")
    spec = json.loads((shipped / "okay_nabu.json").read_text()) | {"model": "mine.tflite"}
    (tmp_path / "mine.json").write_text(json.dumps(spec))
    assert MicroWakeEngine(str(tmp_path / "mine.tflite")).name == "mine"
    assert (
        Activation(
            ListenConfig(mode="wake", wake_engine="micro", wake_model=str(tmp_path / "mine.json"))
        ).admit("Okay Nabu, hi there", 0.0)
        == "hi there"
    )
    with pytest.raises(ModelMissingError, match="nothing.json"):
        MicroWakeEngine(str(tmp_path / "nothing.json"))
    (tmp_path / "mine.tflite").write_bytes(b"<html>not found</html>")
    with pytest.raises(ModelCorruptError, match="not a TFLite model"):
        MicroWakeEngine(str(tmp_path / "mine.json"))
    with pytest.raises(ConfigError, match="okay_nabu"):
        MicroWakeEngine("okay_nabo")


def test_the_threshold_is_the_model_s_unless_set_and_follows_a_reload() -> None:
    from assistant.engines.micro_wake import MicroWakeEngine, load_wake_detector

    detector = micro()
    assert detector.threshold == detector.default_threshold == 0.85
    assert MicroWakeEngine("okay_nabu", 0.6).threshold == 0.6
    loaded = load_wake_detector(ListenConfig(mode="wake", wake_threshold=0.7))
    assert loaded is not None and loaded.threshold == 0.7
    stage = WakeStage(detector, ListenConfig(mode="wake"), ReportLog(), Host())
    stage.reconfigure(ListenConfig(mode="wake", wake_threshold=0.5))
    assert detector.threshold == 0.5
    stage.reconfigure(ListenConfig(mode="wake"))
    assert detector.threshold == 0.85
    with pytest.raises(ConfigError, match=r"listen.wake_threshold"):
        ListenConfig(wake_threshold=1.5)


# -- where the package is missing ----------------------------------------------------------------


def test_without_the_package_auto_falls_back_and_micro_is_a_coded_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from assistant.engines.micro_wake import load_wake_detector

    monkeypatch.setitem(sys.modules, "pymicro_wakeword", None)  # import fails as if not installed
    with caplog.at_level(logging.WARNING):
        assert load_wake_detector(ListenConfig(mode="wake")) is None
    assert "pip install 'assistant[wake]'" in caplog.text and "wake phrases" in caplog.text
    with pytest.raises(ConfigError, match=r"pip install 'assistant\[wake\]'"):
        load_wake_detector(ListenConfig(mode="wake", wake_engine="micro"))
    config = replace(Config(), listen=ListenConfig(mode="wake"))
    pipeline = Pipeline(config, Engines(FakeTranscriberCounting(), FakeChat(), FakeSynth()), MemorySink())
    assert pipeline.config.listen.wake_engine == "phrase"
    assert pipeline.controller.activation.admit("what time is it", 0.0) is None  # phrases, as before


def test_run_wake_without_the_package_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['pymicro_wakeword'] = None; from assistant.cli import main;"
        f" sys.exit(main(['--model-dir', {str(tmp_path)!r}, 'run', '--wake', 'okay_nabu',"
        " '--input', 'x.wav']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, cwd=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "error [config_invalid]: listen.wake_engine = 'micro'" in err, err
    assert "pip install 'assistant[wake]'" in err and "Traceback" not in err, err


async def test_doctor_says_whether_the_wake_word_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from assistant.doctor import check_wake
    from assistant.doctor.base import Setup

    pytest.importorskip("pymicro_wakeword")

    def setup(**listen: Any) -> Setup:
        return Setup(config=replace(Config(), listen=ListenConfig(**listen)))

    assert await check_wake(setup()) == []  # not in wake mode: nothing to check
    [ok] = await check_wake(setup(mode="wake"))
    assert ok.level == "ok" and "'Okay Nabu' (okay_nabu) loads" in ok.message
    [bad] = await check_wake(setup(mode="wake", wake_model="/nowhere/mine.json"))
    assert bad.level == "fail" and "[model_missing]" in bad.message
    monkeypatch.setitem(sys.modules, "pymicro_wakeword", None)
    [warn] = await check_wake(setup(mode="wake"))
    assert warn.level == "warn" and "'hey assistant'" in warn.message and "assistant[wake]" in warn.fix
    [fail] = await check_wake(setup(mode="wake", wake_engine="micro"))
    assert fail.level == "fail"


def test_wake_option_sets_the_mode_engine_and_model() -> None:
    from assistant.cli import _config, build_parser

    args = build_parser().parse_args(["run", "--wake", "hey_jarvis", "--input", "mic"])
    listen = _config(args).listen
    assert (listen.mode, listen.wake_engine, listen.wake_model) == ("wake", "micro", "hey_jarvis")
    both = build_parser().parse_args(["run", "--wake", "alexa", "--push-to-talk"])
    with pytest.raises(ConfigError, match="--wake and --push-to-talk"):
        _config(both)


# -- the whole pipeline, on real audio ------------------------------------------------------------


class FakeTranscriberCounting(Transcriber):
    """Counts calls; hears nothing."""

    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, pcm: bytes, *args: Any, **kwargs: Any) -> AsrResult:
        self.calls += 1
        return AsrResult("", (), len(pcm) / 32)


class Counting(Transcriber):
    """The real ASR, counted, with what it heard."""

    def __init__(self, inner: Transcriber) -> None:
        self.inner = inner
        self.calls = 0
        self.texts: list[str] = []

    def transcribe(self, pcm: bytes, *args: Any, **kwargs: Any) -> AsrResult:
        self.calls += 1
        result = self.inner.transcribe(pcm, *args, **kwargs)
        self.texts.append(result.text)
        return result


def _config(tmp_path: Path, *, realtime: bool, follow_up_s: float = 8.0) -> Config:
    base = Config()
    return replace(
        base,
        input=replace(base.input, realtime=realtime),
        listen=ListenConfig(mode="wake", wake_engine="micro", follow_up_s=follow_up_s),
        intents=IntentsConfig(timers_file=str(tmp_path / "timers.json")),
    )


async def _run(
    engines: Any, config: Config, stream: bytes, sink: MemorySink | None = None
) -> tuple[list[TurnRecord], list[Event], Counting]:
    asr = Counting(engines.asr)
    records: list[TurnRecord] = []
    pipeline = Pipeline(
        config, Engines(asr, FakeChat(), FakeSynth(), micro()), sink or MemorySink(), on_turn=records.append
    )
    watch = pipeline.events.subscribe(10_000)
    await Daemon(pipeline).run(PcmSource(stream, config.input))
    return records, [watch.get_nowait() for _ in range(watch.qsize())], asr


@pytest.mark.models
@pytest.mark.parametrize("voice", ["piper", *(v.name for v in VOICES)])
async def test_the_question_after_the_wake_word_is_one_turn_and_nothing_before_is_transcribed(
    engines: Any, spoken: dict[tuple[str, str], bytes], speak: Any, tmp_path: Path, voice: str
) -> None:
    def say(text: str) -> bytes:
        if voice != "piper":
            return spoken[(text, voice)]
        pcm: bytes = speak(text).tobytes()
        return silence(300) + pcm + silence(300)

    stream = b"".join(
        [say(OTHERS[0]), silence(1500), say(OTHERS[2]), silence(1500), say(WAKE), silence(1000)]
    )
    records, events, asr = await _run(engines, _config(tmp_path, realtime=False), stream)
    assert asr.calls >= 1 and len(records) == 1, [r.transcript for r in records]
    assert records[0].transcript.lower().strip(" .?") == "what time is it", records[0].transcript
    assert records[0].intent == "HassGetCurrentTime"
    assert [type(e) for e in events if isinstance(e, WakeDetected)] == [WakeDetected]
    assert events.index(next(e for e in events if isinstance(e, WakeDetected))) < events.index(
        next(e for e in events if isinstance(e, StateChanged) and e.state == State.LISTENING)
    )
    # the ASR ran on the question only (and its speculation): never on the two sentences before it
    assert asr.calls <= 2
    # the controller publishes each state once: listening at the wake word (not again at speech)
    states = [e.state for e in events if isinstance(e, StateChanged)]
    assert states == ["listening", "thinking", "speaking", "idle"], states


@pytest.mark.models
@pytest.mark.parametrize("voice", ["piper", "en-us"])
async def test_the_wake_word_then_a_pause_with_the_microphone_open_is_not_a_turn(
    engines: Any, spoken: dict[tuple[str, str], bytes], speak: Any, tmp_path: Path, voice: str
) -> None:
    """Within the listening window of a first question, the user says the wake word again, pauses
    two seconds, then asks: the word reaches the VAD as speech, but nothing is speculated on it
    and it is no turn; only the questions are transcribed."""

    def say(text: str) -> bytes:
        if voice != "piper":
            return spoken[(text, voice)]
        pcm: bytes = speak(text).tobytes()
        return silence(300) + pcm + silence(300)

    stream = say(WAKE) + silence(1000) + say(WAKE_ALONE) + silence(2000) + say(OTHERS[1]) + silence(1000)
    records, events, asr = await _run(engines, _config(tmp_path, realtime=False), stream)
    heard = [r.transcript.lower().strip(" .?") for r in records]
    assert heard_as(heard, ["what time is it", "turn on the kitchen lights"]), heard
    assert sum(isinstance(e, WakeDetected) for e in events) == 2
    assert all(text.strip() for text in asr.texts), asr.texts  # never the wake word's silenced audio
    assert asr.calls <= 4, asr.texts  # each question, perhaps speculated once


@pytest.mark.models
@pytest.mark.parametrize("voice", ["en-us", "en-gb"])
async def test_a_wake_word_said_while_the_gate_is_open_is_not_transcribed(
    engines: Any, spoken: dict[tuple[str, str], bytes], tmp_path: Path, voice: str
) -> None:
    """The second wake word comes within LISTEN_AFTER_WAKE_S of the first: it reaches the VAD."""
    stream = spoken[(WAKE, voice)] + silence(1000) + spoken[(WAKE_LIGHTS, voice)] + silence(1000)
    records, events, _ = await _run(engines, _config(tmp_path, realtime=False), stream)
    heard = [r.transcript.lower().strip(" .?") for r in records]
    assert heard_as(heard, ["what time is it", "turn on the kitchen lights"]), heard
    assert sum(isinstance(e, WakeDetected) for e in events) == 2


@pytest.mark.models
async def test_a_detection_before_the_word_has_ended_leaves_none_of_it_in(
    engines: Any, tmp_path: Path
) -> None:
    """A piper take ("Okay nabu, what time is it?") on which the detector is sure while "bu" still
    sounds: the stage took the quietest moment before the detection, the closure of the "b", and
    Whisper heard "Move. What time is it?" (piper varies from take to take; about one in twenty
    did this, which is why the test with a fresh take failed now and then)."""
    from .conftest import read_wav

    take, rate = read_wav(Path(__file__).parent / "data" / "okay_nabu_early_detection.wav")
    assert rate == RATE
    stream = take.tobytes() + silence(1000)
    detector = micro()
    [found] = [d for piece in pieces(stream) for d in detector.process(piece.pcm)]
    at, levels = found.at_sample, np.abs(take.astype(np.int32))
    before = at - 350 * 16 + word_gap(take[at - 350 * 16 : at].tobytes())
    assert levels[before:at].max() > 5000  # a syllable ("bu") lies between that cut and the detection
    records, _, asr = await _run(engines, _config(tmp_path, realtime=False), stream)
    assert [r.transcript for r in records] == ["What time is it?"], asr.texts


def test_trim_silences_the_utterance_up_to_the_end_of_the_wake_word() -> None:
    word = (np.sin(np.arange(8000) / 3) * 9000).astype("<i2").tobytes()
    question = (np.sin(np.arange(16000) / 5) * 9000).astype("<i2").tobytes()
    stream = silence(300) + word + silence(100) + question
    stage, _, host = gate([(300 + 500 + 200) * 16])
    host.state = State.SPEAKING  # a reply plays: the gate is open, the word goes to the VAD
    assert passed(stage, pieces(stream)) == stream
    utterance = Utterance(
        turn_id=1, pcm=stream, speech_start_ms=300.0, speech_end_ms=2400.0, endpoint_ms=2700.0
    )
    trimmed = np.frombuffer(stage.trim(utterance).pcm, dtype="<i2")
    first = int(np.flatnonzero(trimmed)[0])
    assert 800 * 16 <= first <= 900 * 16 + 1 and stage.trimmed == 1
    assert trimmed[first:].tobytes() == stream[2 * first :]
    other = Utterance(
        turn_id=2, pcm=silence(300) + word, speech_start_ms=0.0, speech_end_ms=1.0, endpoint_ms=1.0
    )
    assert stage.trim(other) is other  # not what followed the wake word


@pytest.mark.models
async def test_the_earcon_plays_before_the_answer(
    engines: Any, spoken: dict[tuple[str, str], bytes], tmp_path: Path
) -> None:
    base = _config(tmp_path, realtime=False)
    config = replace(base, listen=replace(base.listen, wake_earcon=True))
    sink = MemorySink()
    records, _, _ = await _run(engines, config, spoken[(WAKE, "en-us")] + silence(1000), sink)
    assert len(records) == 1 and len(sink.turns) == 2
    assert sink.turns[0] == earcon(FakeSynth.sample_rate)  # the tone, at the voice's rate, then the answer


@pytest.mark.models
async def test_a_follow_up_needs_no_wake_word_until_the_window_closes(
    engines: Any, spoken: dict[tuple[str, str], bytes], tmp_path: Path
) -> None:
    voice = "en-us"
    stream = b"".join(
        [silence(500), spoken[(WAKE, voice)], silence(6000)]  # answered within about 1 s
        # a follow-up, after the LISTEN_AFTER_WAKE_S that follow the wake word: no wake word needed
        + [spoken[(OTHERS[1], voice)], silence(9500)]
        + [spoken[(OTHERS[0], voice)], silence(500)]  # 9 s after the follow-up's answer: too late
    )
    assert LISTEN_AFTER_WAKE_S < 6
    started = time.monotonic()
    records, events, asr = await _run(engines, _config(tmp_path, realtime=True, follow_up_s=7.0), stream)
    assert time.monotonic() - started >= len(stream) / 32_000  # paced in real time
    heard = [r.transcript.lower().strip(" .?") for r in records]
    assert heard_as(heard, ["what time is it", "turn on the kitchen lights"]), heard
    assert sum(isinstance(e, WakeDetected) for e in events) == 1
    assert asr.calls <= 4  # two turns (each perhaps speculated once); the last sentence never reached ASR


@pytest.mark.models
def test_the_wake_bench_in_brief(model_dir: Path, tmp_path: Path) -> None:
    from assistant.bench.wake import VOICES as BENCH_VOICES
    from assistant.bench.wake import format_wake, run_wake_bench

    result = run_wake_bench(model_dir, voices=BENCH_VOICES[1:3], limit=1, cache_dir=tmp_path)
    clean = result["misses"]["clean"]
    assert (clean["takes"], clean["misses"], clean["misses_0.5"], clean["rate"]) == (2, 0, 0, 0.0)
    assert result["false"]["speech clean"]["wakes"] == 0
    if importlib.util.find_spec("pywebrtc_audio") is not None:  # the noisy streams suppressed too
        assert result["suppression"] == "very_high"
        assert result["misses"]["snr15 ns"]["takes"] == 2 and "speech snr10 ns" in result["false"]
    cpu = result["cpu"]
    assert 0 < cpu["detector_s_per_hour"] < cpu["always_on_s_per_hour_of_speech"]
    table = format_wake(result)
    assert "espeak-en-us" in table and "per hour" in table


# -- the controller owns the wake state ------------------------------------------------------------


def test_each_state_change_is_published_once_from_the_wake_word_to_idle() -> None:
    """The wake stage reports the detection; the controller publishes ``listening`` once (not
    again when the question's speech starts), then thinking, speaking, idle."""
    from assistant.turn.kinds import Mark
    from assistant.turn.reports import EndpointFinal, Finished, Marked, NoSpeech, Played, SpeechBegan

    from .fakes import controller

    ctl = controller(replace(Config(), listen=ListenConfig(mode="wake", wake_engine="micro")))
    watch = ctl.events.subscribe()

    def states() -> list[str]:
        return [
            e.state for e in (watch.get_nowait() for _ in range(watch.qsize())) if isinstance(e, StateChanged)
        ]

    ctl.report(WakeHeard("Okay Nabu", "okay_nabu", 1000.0, 0.9))
    ctl.report(SpeechBegan(1))
    ctl.report(Marked(1, Mark.SPEECH_START, 1200.0))
    assert states() == ["listening"]
    ctl.report(EndpointFinal(1, 2000.0, 2300.0))
    ctl.admit(1, "what time is it")
    ctl.report(Marked(1, Mark.TRANSCRIPT, 2400.0))
    ctl.report(Played(1, 2500.0, 800.0, 2500.0, True))
    ctl.report(Finished(1, 3300.0))
    assert states() == ["thinking", "speaking", "idle"]
    # the word, and no question: the gate closes, idle again
    ctl.report(WakeHeard("Okay Nabu", "okay_nabu", 9000.0, 0.9))
    ctl.report(WakeClosed())
    assert states() == ["listening", "idle"]
    # the word, then a noise that was no speech: idle again, not stuck listening or thinking
    ctl.report(WakeHeard("Okay Nabu", "okay_nabu", 20_000.0, 0.9))
    ctl.report(SpeechBegan(2))
    ctl.report(Marked(2, Mark.SPEECH_START, 20_100.0))
    ctl.report(NoSpeech(2))
    assert states() == ["listening", "idle"] and ctl.tracker.open_turns() == []
