"""The stop word: the phrases, the ASR stage's check, the controller's stop, and on the virtual
devices with the real models: "stop" over a playing reply or a ringing alarm stops it and nothing
is answered; other short words over an alarm leave it ringing; "stop" when nothing plays is an
ordinary command."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.config import Config, IntentsConfig, ListenConfig, MqttConfig
from assistant.contracts import AsrResult, Transcriber
from assistant.errors import StageError
from assistant.events import Event, State, StateChanged, StopWord, TurnFinished
from assistant.intents.stopword import is_stop, stop_phrases
from assistant.messages import EndOfStream, Message, Transcript, Utterance
from assistant.mqtt.protocol import Topics, event_messages
from assistant.stages.asr import AsrStage
from assistant.turn.kinds import Mark, TurnKind
from assistant.turn.reports import Failed, Marked, Played, ReportLog, SpeechBegan, StopWordHeard, Unheard

from .conftest import SPEECH_RATE, silence, write_wav
from .fakes import FakeChat, FakeSynth, controller
from .pulse import PulseServer, pulse_fixture  # noqa: F401 - the fixture
from .test_audio_pulse import loud, until
from .test_bargein import Rig as BargeRig
from .test_bargein import (
    close_rigs,  # noqa: F401 - the fixture
    normalized,
)

LONG = (
    "Rome was founded, the story goes, by Romulus in the eighth century before Christ. It grew from a"
    " village of shepherds on the Palatine hill into a kingdom, then a republic, and at last an"
    " empire that ruled the whole Mediterranean for five hundred years."
)


# -- the phrases -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["Stop.", "Stop!", "stop it", "Stop, stop.", "Okay, stop.", "Stop talking.", "Cancel.", "Be quiet.",
     "Enough!", "That's enough.", "Never mind.", "Stop the alarm.", "Stop it, please."],
)  # fmt: skip
def test_the_stop_phrases_are_heard(text: str) -> None:
    assert is_stop(text)


@pytest.mark.parametrize(
    "text",
    ["", "...", "Okay.", "Hello.", "What time is it?", "Stop the music and tell me a joke.",
     "Don't stop.", "Stop. What time is it?", "Top."],
)  # fmt: skip
def test_other_words_are_not_the_stop_word(text: str) -> None:
    assert not is_stop(text)


def test_the_phrases_are_the_matcher_s_stop_sentences() -> None:
    phrases = stop_phrases("en")
    assert {("stop",), ("cancel",), ("be", "quiet"), ("enough",), ("never", "mind")} <= phrases
    assert stop_phrases("de")  # the package's own wording in another language ("stopp" or the like)


def test_the_stop_word_is_published_on_mqtt() -> None:
    config = MqttConfig()
    [msg] = event_messages(StopWord("Stop.", 1234.56, [3], 1), Topics(config), config)
    assert msg.topic == "assistant/default/stop_word" and msg.retain is False
    assert msg.payload == '{"text": "Stop.", "at_ms": 1234.6, "stopped": [3], "alarms": 1}'


# -- the ASR stage's check, with a scripted transcriber ----------------------------------------------


class Says(Transcriber):
    def __init__(self, text: str) -> None:
        self.text = text

    def transcribe(self, pcm: bytes, *args: Any, **kwargs: Any) -> AsrResult:
        return AsrResult(self.text, (), len(pcm) / 32)


async def _asr(
    text: str, *, over_playback: bool = True, speech_ms: float = 600.0, on: bool = True
) -> tuple[ReportLog, list[Message]]:
    """The ASR stage on one utterance: what it reported, and what it sent on."""
    log = ReportLog()
    stage = AsrStage(Says(text), log, stop_word=on)
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    end = 1000.0 + speech_ms
    await inbox.put(Utterance(1, bytes(3200), 1000.0, end, end + 200, over_playback=over_playback))
    await inbox.put(EndOfStream())
    await stage.run(inbox, outbox)
    return log, [outbox.get_nowait() for _ in range(outbox.qsize())]


async def test_a_short_stop_over_playback_goes_no_further_than_asr() -> None:
    log, out = await _asr("Stop.")
    assert [r.text for r in log.of(StopWordHeard)] == ["Stop."]
    assert not [m for m in out if isinstance(m, Transcript)]
    # the same words said when nothing plays, at length, or with the switch off: a transcript
    for kwargs in ({"over_playback": False}, {"speech_ms": 2000.0}, {"on": False}):
        other, sent = await _asr("Stop.", **kwargs)  # type: ignore[arg-type]
        assert not other.of(StopWordHeard), kwargs
        assert [m.text for m in sent if isinstance(m, Transcript)] == ["Stop."]
    hello, sent = await _asr("Hello.")
    assert not hello.of(StopWordHeard) and [m.text for m in sent if isinstance(m, Transcript)] == ["Hello."]


# -- the controller ------------------------------------------------------------------------------


class Speaker:
    def __init__(self) -> None:
        self.interrupts = 0

    def interrupt(self) -> None:
        self.interrupts += 1

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def playback_peak(self, start_ns: int, end_ns: int) -> float:
        return 0.5


class Alarms:
    def __init__(self) -> None:
        self.ringing = 1

    def silence(self) -> int:
        count, self.ringing = self.ringing, 0
        return count


def test_the_controller_stops_what_plays_and_the_stop_word_is_no_turn() -> None:
    ctl = controller()  # unpaced: no barge-in at the first syllable, the stop word alone stops it
    ctl.speaker, ctl.alarms = Speaker(), Alarms()  # type: ignore[assignment]
    watch = ctl.events.subscribe()
    said = ctl.begin(TurnKind.SAY, text=LONG)
    ctl.report(Played(said, 0.0, 9000.0, 0.0, True))
    assert ctl.state == State.SPEAKING and ctl.playing
    ctl.report(SpeechBegan(said + 1))
    ctl.report(StopWordHeard(said + 1, "Stop."))
    events: list[Event] = [watch.get_nowait() for _ in range(watch.qsize())]
    finished = [e for e in events if isinstance(e, TurnFinished)]
    assert [(e.turn_id, e.record["outcome"]) for e in finished] == [(said, "cancelled")]  # no turn of its own
    [stop] = [e for e in events if isinstance(e, StopWord)]
    assert (stop.text, stop.stopped, stop.alarms) == ("Stop.", [said], 1)
    assert ctl.speaker.interrupts == 1 and ctl.tracker.actions["stop_word"] == 1  # type: ignore[union-attr]
    assert ctl.tracker.open_turns() == [] and ctl.state == State.IDLE
    assert events[-1] == stop or StateChanged(State.IDLE) in events


async def test_in_wake_mode_speech_heard_only_for_the_stop_word_is_never_answered() -> None:
    class Gate:
        awake = False

    ctl = controller(replace(Config(), listen=ListenConfig(mode="wake", wake_engine="micro")))
    ctl.wake = Gate()
    watch = ctl.events.subscribe()
    ctl.report(SpeechBegan(1))
    ctl.report(Marked(1, Mark.SPEECH_START, 100.0))
    assert ctl.admit(1, "what is the weather") is None  # an alarm rang, nobody said the wake word
    assert ctl.state == State.IDLE and ctl.tracker.open_turns() == []
    assert not [e for e in (watch.get_nowait() for _ in range(watch.qsize())) if isinstance(e, StateChanged)]
    ctl.report(SpeechBegan(3))  # words nobody could make out in time: no "say that again?" either
    ctl.report(Unheard(3, "late"))
    sorry: list[int] = []

    async def say_sorry(turn_id: int) -> None:
        sorry.append(turn_id)

    ctl.output, ctl.tts = object(), FakeSynth()  # type: ignore[assignment]
    ctl._say_sorry = say_sorry  # type: ignore[method-assign]  # noqa: SLF001
    ctl.report(SpeechBegan(4))  # nor an apology for a failure on them
    ctl.report(Failed(4, StageError("asr", "x"), "asr"))
    await asyncio.sleep(0)
    assert ctl.tracker.actions["reprompt"] == 0 and sorry == [] and ctl.tracker.open_turns() == []
    Gate.awake = True
    ctl.report(SpeechBegan(2))
    assert ctl.admit(2, "what is the weather") == "what is the weather"


# -- on the virtual devices, with the real models ------------------------------------------------------


class Rig(BargeRig):
    """The daemon on ``mic.monitor`` -> ``spk`` (``test_bargein``): real VAD, Whisper and piper, a
    scripted LLM; the events it published."""

    def __init__(self, pulse: PulseServer, engines: Any, config: Config) -> None:
        from assistant.pipeline import Engines

        self.chat = FakeChat("Hello to you too.")
        super().__init__(pulse, Engines(engines.asr, self.chat, engines.tts, engines.wake), config)
        self.events = self.pipeline.events.subscribe(10_000)

    async def say_into_mic(self, samples: np.ndarray, path: Path) -> float:
        return await self.play(write_wav(path, samples, SPEECH_RATE))

    def heard(self) -> list[Event]:
        return [self.events.get_nowait() for _ in range(self.events.qsize())]


async def ringing(rig: Rig) -> Any:
    """Start ``rig``, then a one-second timer; return the timers once its alarm has rung 1.5 s."""
    await rig.start()
    timers = rig.pipeline.timers
    assert timers is not None
    timers.start(time.time(), 1.0)
    await until(lambda: timers.ringing and rig.sink.playback_level() > 0, 30)
    await asyncio.sleep(1.5)
    return timers


def _config(tmp_path: Path, **listen: Any) -> Config:
    base = Config()
    return replace(
        base,
        listen=replace(base.listen, **listen),
        intents=IntentsConfig(timers_file=str(tmp_path / "timers.json")),
    )


def _speech(speak: Any, text: str) -> np.ndarray:
    return np.concatenate([normalized(speak(text), 0.7), silence(300)])


ECHO_18_DB = (
    "with the reply looped back at -18 dB, the echo gate lets only part of 'Stop.' through on a loaded"
    " machine, and the rest is dropped as too little speech (passes alone, failed in CI twice)"
)


@pytest.mark.models
@pytest.mark.parametrize(
    ("barge_in", "echo", "aec"),
    [
        (False, None, False),
        (True, None, False),
        pytest.param(True, "50%", False, marks=pytest.mark.xfail(reason=ECHO_18_DB, strict=False)),
        (False, None, True),
    ],
    ids=["no-barge-in", "barge-in", "barge-in-echo-18dB", "no-barge-in-aec"],
)
async def test_stop_over_a_playing_reply_stops_it_and_nothing_is_answered(
    pulse: PulseServer,
    tmp_path: Path,
    engines: Any,
    speak: Any,
    barge_in: bool,
    echo: str | None,
    aec: bool,
) -> None:
    """With barge-in off only the stop word can stop the reply; with it on, the reply stops at
    the first syllable (barge-in) and the stop word is still no turn of its own. ``echo``: the
    microphone also hears the speaker, at this volume. ``aec``: with echo cancellation on (the
    word 2.5 s into the canceller's first far end, where a fresh AEC3 suppressed it)."""
    if echo is not None:
        pulse.loopback("spk.monitor", "mic", volume=echo)
    config = _config(tmp_path, barge_in=barge_in)
    if aec:
        pytest.importorskip("pywebrtc_audio", reason="the aec extra (pywebrtc-audio) is not installed")
        config = replace(config, audio_processing=replace(config.audio_processing, echo_cancellation=True))
    rig = Rig(pulse, engines, config)
    await rig.start()
    said = await rig.pipeline.say(LONG)
    await until(lambda: rig.sink.playback_level() > 0, 60)
    await asyncio.sleep(2.5)  # the echo gate has heard a second of playback
    stop = _speech(speak, "Stop.")
    asked = await rig.say_into_mic(stop, tmp_path / "stop.wav")
    await until(lambda: rig.pipeline.tracker.actions["stop_word"] == 1, 15)
    stopped_after = time.monotonic() - asked
    await asyncio.sleep(3.0)  # anything it might still answer
    _, (spk, spk_t) = await rig.stop()

    assert [(r.turn_id, r.outcome) for r in rig.records] == [(said, "cancelled")]
    assert rig.chat.calls == []  # nothing was answered
    assert rig.pipeline.tracker.actions["barge_in"] == int(barge_in)
    [event] = [e for e in rig.heard() if isinstance(e, StopWord)]
    # with barge-in the reply stopped at the first syllable already; the stop word stopped nothing more
    assert event.stopped == ([] if barge_in else [said]) and "stop" in event.text.lower()
    # the speaker fell silent: no loud sample later than the stop word's end plus its recognition
    stop_end = asked + len(stop) / SPEECH_RATE
    last = spk_t[loud(spk, 300)[-1]]
    print(f"stop word: recognised {stopped_after:.2f} s after it was played; speaker silent "
          f"{last - asked:.2f} s after ({len(stop) / SPEECH_RATE:.2f} s of audio)")  # fmt: skip
    assert last < stop_end + 0.8, (last - asked, stop_end - asked)
    assert stopped_after < len(stop) / SPEECH_RATE + 1.5
    if aec:
        apm = rig.pipeline._apm  # noqa: SLF001 - what ran
        assert apm is not None and apm.processor is not None and apm.processor.features.echo


@pytest.mark.models
async def test_without_barge_in_other_words_over_a_reply_do_not_stop_it(
    pulse: PulseServer, tmp_path: Path, engines: Any, speak: Any
) -> None:
    """``barge_in = false``: "Hello." over the reply is a question for after it; the reply plays on
    until "Stop.", which stops it and the answer waiting behind it."""
    rig = Rig(pulse, engines, _config(tmp_path, barge_in=False))
    await rig.start()
    said = await rig.pipeline.say(LONG)
    await until(lambda: rig.sink.playback_level() > 0, 60)
    await asyncio.sleep(2.5)
    await rig.say_into_mic(_speech(speak, "Hello."), tmp_path / "hello.wav")
    await until(lambda: rig.chat.calls != [], 15)  # heard and answered (its answer waits its turn)
    await asyncio.sleep(2.0)
    assert rig.records == [] and rig.sink.playback_level() > 0  # the reply plays on
    assert rig.pipeline.tracker.actions["stop_word"] == 0 and rig.sink.interrupts == 0
    asked = await rig.say_into_mic(_speech(speak, "Stop."), tmp_path / "stop.wav")
    await until(lambda: rig.pipeline.tracker.actions["stop_word"] == 1, 15)
    await asyncio.sleep(2.0)
    _, (spk, spk_t) = await rig.stop()
    assert [(r.turn_id, r.outcome) for r in rig.records] == [(said, "cancelled"), (said + 1, "cancelled")]
    assert spk_t[loud(spk, 300)[-1]] < asked + 1.5  # silent from the stop word on: nothing after it


@pytest.mark.models
async def test_an_alarm_rings_on_through_other_words_and_stops_at_the_stop_word(
    pulse: PulseServer, tmp_path: Path, engines: Any, speak: Any
) -> None:
    rig = Rig(pulse, engines, _config(tmp_path))
    timers = await ringing(rig)
    await rig.say_into_mic(_speech(speak, "Hello."), tmp_path / "hello.wav")
    await until(lambda: len(rig.records) >= 1, 30)  # "hello" is a question: answered
    assert timers.ringing, "other words silenced the alarm"
    said_before = timers.alarms_said
    await until(
        lambda: timers.alarms_said > said_before and rig.sink.playback_level() > 0, 15
    )  # it rings again
    await asyncio.sleep(1.0)
    asked = await rig.say_into_mic(_speech(speak, "Stop."), tmp_path / "stop.wav")
    await until(lambda: rig.pipeline.tracker.actions["stop_word"] == 1, 15)
    assert not timers.ringing
    await asyncio.sleep(6.0)  # past the alarm's repeat: it does not ring again
    _, (spk, spk_t) = await rig.stop()

    assert [r.transcript for r in rig.records] == [rig.records[0].transcript]  # "hello" only
    assert "hello" in rig.records[0].transcript.lower()
    [event] = [e for e in rig.heard() if isinstance(e, StopWord)]
    assert event.alarms == 1
    assert spk_t[loud(spk, 300)[-1]] < asked + 2.5  # silent from the stop word on


@pytest.mark.models
async def test_stop_when_nothing_plays_is_an_ordinary_command(
    pulse: PulseServer, tmp_path: Path, engines: Any, speak: Any
) -> None:
    rig = Rig(pulse, engines, _config(tmp_path))
    await rig.start()
    await asyncio.sleep(1.0)
    await rig.say_into_mic(_speech(speak, "Stop."), tmp_path / "stop.wav")
    await until(lambda: len(rig.records) >= 1, 30)
    await rig.stop()
    assert rig.pipeline.tracker.actions["stop_word"] == 0
    assert not [e for e in rig.heard() if isinstance(e, StopWord)]
    [record] = rig.records
    assert record.intent == "HassNevermind" and record.reply == ""  # the matcher's "stop": nothing to stop


@pytest.mark.models
async def test_in_wake_mode_an_alarm_stops_at_the_stop_word_and_other_words_are_not_answered(
    pulse: PulseServer, tmp_path: Path, engines: Any, speak: Any
) -> None:
    """No wake word is said: while the alarm rings the microphone is open for the stop word only."""
    pytest.importorskip("pymicro_wakeword")
    from assistant.engines.micro_wake import MicroWakeEngine
    from assistant.pipeline import Engines

    config = _config(tmp_path, mode="wake", wake_engine="micro")
    rig = Rig(pulse, Engines(engines.asr, engines.llm, engines.tts, MicroWakeEngine("okay_nabu")), config)
    timers = await ringing(rig)
    await rig.say_into_mic(_speech(speak, "What time is it?"), tmp_path / "question.wav")
    await asyncio.sleep(4.0)
    assert timers.ringing and rig.pipeline.tracker.actions["stop_word"] == 0
    await until(lambda: rig.sink.playback_level() > 0, 15)  # it rings again
    await asyncio.sleep(1.0)
    await rig.say_into_mic(_speech(speak, "Stop."), tmp_path / "stop.wav")
    await until(lambda: rig.pipeline.tracker.actions["stop_word"] == 1, 15)
    assert not timers.ringing
    await asyncio.sleep(1.0)
    await rig.stop()
    assert rig.records == [] and rig.chat.calls == []  # nothing was answered: no wake word was said
    states = [e.state for e in rig.heard() if isinstance(e, StateChanged)]
    assert State.LISTENING not in states and State.THINKING not in states, states
