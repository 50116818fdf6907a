"""Spoken commands through the real pipeline on the default models, in three espeak-ng voices:
the right intent, a spoken confirmation that Whisper hears back as the right words, the events on
the bus; "stop" silences a ringing timer; a question that is no command still reaches the LLM."""

from __future__ import annotations

import difflib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.audio.convert import float_to_pcm16, pcm16_to_float, resample
from assistant.audio.sinks import MemorySink
from assistant.audio.sources import PcmSource
from assistant.bench.corpus import CorpusItem, make_stream
from assistant.bench.runner import TimedChat
from assistant.config import Config, IntentsConfig
from assistant.contracts import Transcriber
from assistant.daemon import Daemon
from assistant.events import DeviceCommand, Event, IntentNotRecognized, IntentRecognized
from assistant.intents.responses import number_words, ordinal_words
from assistant.pipeline import Engines, Pipeline
from assistant.turn.latency import TurnRecord

from .conftest import SPEECH_RATE
from .spoken_commands import COMMANDS, LIGHTS, QUESTION, SHORT_TIMER, STOP, VOICES, spoken_corpus


@pytest.fixture(scope="module")
def spoken(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], CorpusItem]:
    """(text, voice name) -> the text spoken in that voice, 16 kHz, 300 ms of silence around."""
    return spoken_corpus(model_dir, tmp_path_factory.mktemp("corpus"))


def _config(tmp_path: Path, *, realtime: bool) -> Config:
    base = Config()
    return replace(
        base,
        input=replace(base.input, realtime=realtime),
        devices=(LIGHTS,),
        intents=IntentsConfig(area="kitchen", timers_file=str(tmp_path / "timers.json")),
    )


async def _run(
    engines: Engines, config: Config, stream: bytes, setup: Any = None
) -> tuple[Pipeline, MemorySink, list[TurnRecord], list[Event], TimedChat]:
    sink, records = MemorySink(), []
    chat = TimedChat(engines.llm)
    pipeline = Pipeline(config, Engines(engines.asr, chat, engines.tts), sink, on_turn=records.append)
    if setup is not None:
        setup(pipeline)
    watch = pipeline.events.subscribe(10_000)
    await Daemon(pipeline).run(PcmSource(stream, config.input))
    events = []
    while not watch.empty():
        events.append(watch.get_nowait())
    return pipeline, sink, records, events, chat


def words(text: str) -> str:
    """Text as words to compare: lower case, numbers, times and ordinals spelled out."""
    text = text.lower().replace("cancelled", "canceled").replace("-", " ")
    text = re.sub(r"\b(\d{1,2})(st|nd|rd|th)\b", lambda m: ordinal_words(int(m[1])), text)
    text = re.sub(
        r"\b(\d{1,2})[:.]?(\d{2})\b", lambda m: f"{number_words(int(m[1]))} {number_words(int(m[2]))}", text
    )
    text = re.sub(r"\b\d{1,2}\b", lambda m: number_words(int(m[0])), text)
    return " ".join(re.sub(r"[^a-z ]+", " ", text.replace("-", " ")).split())


@pytest.fixture(scope="module")
def whisper(model_dir: Path) -> Transcriber:
    """The default Whisper on its whole 30 s window (the pipeline's short window is tuned for
    the user's speech, not for checking the assistant's)."""
    from assistant.engines.whisper import WhisperEngine
    from assistant.models.store import resolve

    asr = replace(Config().asr, window="full")
    return WhisperEngine(resolve(asr.model, "asr", model_dir), asr)


def heard_back(whisper: Transcriber, pcm: bytes, rate: int) -> str:
    """What Whisper hears in the assistant's spoken reply."""
    return whisper.transcribe(float_to_pcm16(resample(pcm16_to_float(pcm), rate, SPEECH_RATE))).text


def sounds_like(said: str, heard: str) -> float:
    return difflib.SequenceMatcher(None, words(said), words(heard)).ratio()


@pytest.mark.parametrize("voice", [v.name for v in VOICES])
async def test_spoken_commands(
    engines: Engines,
    whisper: Transcriber,
    spoken: dict[tuple[str, str], CorpusItem],
    tmp_path: Path,
    voice: str,
) -> None:
    stream, _ = make_stream([spoken[(text, voice)] for text, _, _ in COMMANDS], gap_ms=1500)
    _, sink, records, events, chat = await _run(engines, _config(tmp_path, realtime=False), stream)

    assert chat.calls == 0, [r.transcript for r in records]
    got = [(r.intent, r.handled_by, r.outcome) for r in records]
    assert got == [(intent, "intent", "answered") for _, intent, _ in COMMANDS], [
        r.transcript for r in records
    ]
    recognized = [e for e in events if isinstance(e, IntentRecognized)]
    assert [(e.intent, e.slots) for e in recognized] == [(intent, slots) for _, intent, slots in COMMANDS]
    assert not [e for e in events if isinstance(e, IntentNotRecognized)]
    commands = [(e.device, e.topic, e.payload) for e in events if isinstance(e, DeviceCommand)]
    assert commands == [
        ("kitchen lights", LIGHTS.command_topic, "ON"),
        ("kitchen lights", LIGHTS.command_topic, "OFF"),
    ]

    assert len(sink.turns) == len(records) and sink.rate is not None
    heard = [heard_back(whisper, audio, sink.rate) for audio in sink.turns]
    for (text, intent, _), rec, back in zip(COMMANDS, records, heard, strict=True):
        score = sounds_like(rec.reply, back)
        print(f"{voice}: {rec.transcript!r} -> {intent}: {rec.reply!r}, heard back {back!r} ({score:.2f})")
        assert score >= 0.75, (text, rec.reply, back)
    assert "ten minutes" in words(records[2].reply) and records[4].reply == "Timer cancelled."
    assert "on" in words(heard[5]).split() and "off" in words(heard[6]).split()


async def test_stop_silences_a_ringing_timer_in_each_voice(
    engines: Engines, spoken: dict[tuple[str, str], CorpusItem], tmp_path: Path
) -> None:
    """Real time: a 2-second timer rings (again every 1.5 s) until "stop" is said, in each voice."""
    pause = np.zeros(SPEECH_RATE * 4, np.int16).tobytes()
    parts = []
    for voice in VOICES:
        parts += [spoken[(SHORT_TIMER, voice.name)].pcm, pause, spoken[(STOP, voice.name)].pcm, pause]
    alarms: list[float] = []

    def setup(pipeline: Pipeline) -> None:
        assert pipeline.timers is not None
        pipeline.timers.repeat_s = 1.5
        announce = pipeline.controller.announce

        async def heard(text: str) -> bool:
            alarms.append(pipeline.clock.position_ms())
            return await announce(text)

        pipeline.controller.announce = heard  # type: ignore[method-assign]

    config = _config(tmp_path, realtime=True)
    pipeline, _, records, events, chat = await _run(engines, config, b"".join(parts), setup)
    assert [r.intent for r in records] == ["HassStartTimer", "HassNevermind"] * len(VOICES), [
        r.transcript for r in records
    ]
    assert chat.calls == 0
    for started, stopped in zip(records[::2], records[1::2], strict=True):
        rang = [a for a in alarms if started.marks["endpoint"] < a < stopped.marks["speech_start"]]
        assert rang, "the timer rang before stop"
        assert rang[0] - started.marks["endpoint"] == pytest.approx(2000, abs=700)
        after = [a for a in alarms if stopped.marks["endpoint"] + 300 < a < stopped.marks["endpoint"] + 3500]
        assert after == [], "silent after stop"
    assert pipeline.timers is not None and not pipeline.timers.ringing and not len(pipeline.timers.timers)
    assert len([e for e in events if isinstance(e, IntentRecognized)]) == 2 * len(VOICES)


async def test_a_question_that_is_no_command_reaches_the_llm(
    engines: Engines, spoken: dict[tuple[str, str], CorpusItem], tmp_path: Path
) -> None:
    stream, _ = make_stream([spoken[(QUESTION, VOICES[0].name)], spoken[(COMMANDS[0][0], VOICES[0].name)]])
    _, _, records, events, chat = await _run(engines, _config(tmp_path, realtime=False), stream)
    assert [(r.handled_by, r.intent) for r in records] == [("llm", None), ("intent", "HassGetCurrentTime")]
    assert chat.calls == 1 and "capital" in records[0].transcript.lower() and records[0].reply
    (unmatched,) = [e for e in events if isinstance(e, IntentNotRecognized)]
    assert unmatched.turn_id == records[0].turn_id
    assert not [e for e in events if isinstance(e, DeviceCommand)]
