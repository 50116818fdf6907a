"""A pause longer than the endpoint, mid-request: speech that comes back within ``vad.continue_ms``
of a turn's end continues that turn (the segmenter, the controller, the bench's count of cuts,
and real speech through the real pipeline)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from assistant.audio.sinks import MemorySink
from assistant.audio.sources import PcmSource
from assistant.bench import truth
from assistant.config import Config, IntentsConfig, LatencyConfig, VadConfig
from assistant.contracts import AsrResult, Transcriber
from assistant.daemon import Daemon
from assistant.endpointing.segmenter import Dropped, Ended, Segmenter, SegmenterEvent, Started
from assistant.messages import EndOfStream, Message, Resumption, Transcript, Utterance
from assistant.pipeline import Engines, Pipeline
from assistant.stages.asr import AsrStage
from assistant.turn.latency import TurnRecord
from assistant.turn.reports import ReportLog, StopWordHeard

from .conftest import silence
from .fakes import FakeChat, FakeSynth, FakeTranscriber
from .test_bench_truth import PAUSED, _record
from .test_speculation import SlowChat

# 30 ms frames: a turn ends after 20 silent frames (600 ms) and is continued by speech whose first
# voiced frame comes at most 1,000 ms (33 frames) after its end of speech
CONFIG = VadConfig(frame_ms=30, end_silence_ms=600, speculate_after_ms=0, fine_end=False, continue_ms=1000)


def frame(index: int) -> bytes:
    """A frame whose every sample holds its own index, so audio can be traced back."""
    return np.full(480, index, dtype="<i2").tobytes()


def feed(pattern: str, config: VadConfig = CONFIG, forget_after: int = -1) -> list[SegmenterEvent]:
    """One frame per character ('1' voiced); ``forget_after``: call ``forget_last`` at that frame."""
    seg = Segmenter(config)
    events: list[SegmenterEvent] = []
    for i, flag in enumerate(pattern):
        if i == forget_after:
            seg.forget_last()
        events += seg.process(frame(i), flag == "1")
    return events


def frames_in(pcm: bytes) -> list[int]:
    return [int(v) for v in np.frombuffer(pcm, dtype="<i2")[::480]]


def test_speech_soon_after_the_end_continues_the_turn_with_all_its_audio() -> None:
    # speech 300-750 ms, ends at 1,350; speech again at 1,650 (900 ms after its end of speech)
    events = feed("0" * 10 + "1" * 15 + "0" * 30 + "1" * 12 + "0" * 25)
    assert [type(e) for e in events] == [Started, Ended, Started, Ended]
    first, again, whole = events[1], events[2], events[3]
    assert isinstance(first, Ended) and isinstance(again, Started) and isinstance(whole, Ended)
    assert again.continues and again.start_ms == 300.0
    assert (whole.speech_start_ms, whole.speech_end_ms) == (300.0, 67 * 30.0)
    # the whole turn's audio: the first part (from its pre-roll), the pause, the second part,
    # every frame once and in order
    kept = frames_in(whole.pcm)
    assert kept == list(range(kept[0], kept[-1] + 1)) and kept[0] == frames_in(first.pcm)[0]
    assert kept[-1] >= 67


def test_speech_after_the_window_or_with_the_option_off_starts_a_turn_of_its_own() -> None:
    late = feed("0" * 10 + "1" * 15 + "0" * 36 + "1" * 12 + "0" * 25)  # 1,080 ms after
    off = feed("0" * 10 + "1" * 15 + "0" * 30 + "1" * 12 + "0" * 25, replace(CONFIG, continue_ms=0))
    for events in (late, off):
        starts = [e for e in events if isinstance(e, Started)]
        assert len(starts) == 2 and not starts[1].continues
        assert [e.speech_start_ms for e in events if isinstance(e, Ended)][1] > 1500
    # just inside the window: continued
    inside = feed("0" * 10 + "1" * 15 + "0" * 33 + "1" * 12 + "0" * 25)
    assert [e.continues for e in inside if isinstance(e, Started)] == [False, True]


def test_a_forgotten_or_cut_turn_is_continued_by_nothing() -> None:
    forgotten = feed("0" * 10 + "1" * 15 + "0" * 30 + "1" * 12 + "0" * 25, forget_after=50)
    assert [e.continues for e in forgotten if isinstance(e, Started)] == [False, False]
    # cut at max_utterance_ms (1,200 ms): the speech after it is no continuation
    cut = feed("1" * 45 + "0" * 22 + "1" * 12 + "0" * 25, replace(CONFIG, max_utterance_ms=1200))
    ends = [e for e in cut if isinstance(e, Ended)]
    assert ends[0].truncated and [e.continues for e in cut if isinstance(e, Started)] == [False, False]


def test_a_short_sound_soon_after_the_end_is_heard_with_the_turn_not_dropped() -> None:
    """A cough 400 ms after a question is too short to be a turn, but it is no longer alone: the
    question is heard again with it (its answer later), never lost."""
    events = feed("0" * 10 + "1" * 15 + "0" * 33 + "1" * 4 + "0" * 25)
    assert [type(e) for e in events] == [Started, Ended, Started, Ended]
    assert not any(isinstance(e, Dropped) for e in events)


# -- the controller -------------------------------------------------------------------------


async def _run(config: Config, pcm: np.ndarray, asr: FakeTranscriber, chat: FakeChat) -> list[TurnRecord]:
    sink, records = MemorySink(), []
    pipeline = Pipeline(config, Engines(asr, chat, FakeSynth()), sink, on_turn=records.append)
    await Daemon(pipeline).run(PcmSource(pcm.tobytes(), config.input))
    assert pipeline.tracker.actions["continued"] == sum("continued" in r.actions for r in records)
    return records


def _config(**vad: Any) -> Config:
    base = Config()
    return replace(
        base,
        input=replace(base.input, realtime=True, tail_silence_ms=300),
        vad=replace(base.vad, speculate_after_ms=0, end_silence_ms=300, turn_model=False, **vad),
        latency=LatencyConfig(ack=False),
    )


async def test_the_continued_turn_is_cancelled_and_the_next_hears_both_parts(
    espeak: Any, tmp_path: Path
) -> None:
    first, second = espeak("what is the", tmp_path), espeak("capital of France", tmp_path)
    first = first[: np.flatnonzero(np.abs(first.astype(np.int32)) > 300)[-1] + 1]
    pcm = np.concatenate([silence(300), first, silence(600), second, silence(1500)])
    asr = FakeTranscriber(["What is the", "What is the capital of France?"])
    records = await _run(_config(), pcm, asr, SlowChat("Paris.", 1.0))
    assert [(r.outcome, r.transcript) for r in records] == [
        ("cancelled", "What is the"),
        ("answered", "What is the capital of France?"),
    ]
    assert records[0].actions == ["continued"] and "first_audio" not in records[0].marks
    assert records[1].continues == records[0].turn_id and records[0].continues == 0
    assert asr.calls[1] > 2 * (len(first) + len(second))  # int16 bytes: both parts and the pause
    assert records[1].marks["speech_start"] == records[0].marks["speech_start"]
    # and with the option off, the same audio is two turns, each answered
    asr = FakeTranscriber(["What is the", "capital of France"])
    records = await _run(_config(continue_ms=0), pcm, asr, SlowChat("Paris.", 1.0))
    assert [r.outcome for r in records] == ["answered", "answered"]


def test_the_bench_counts_a_continued_turn_as_no_cut_and_a_heard_one_as_a_false_start() -> None:
    marks = {"speech_start": 310.0, "speech_end": 1290.0, "endpoint": 1590.0}
    continued = _record(1, marks, "Set a timer for", outcome="cancelled")
    continued.actions.append("continued")
    whole = _record(
        2, {"speech_start": 310.0, "speech_end": 3090.0, "endpoint": 3390.0}, "Set a timer for ten"
    )
    assert not truth.cut_in_two(continued, PAUSED) and not truth.false_start(continued, PAUSED)
    (found,) = truth.match([continued, whole], [PAUSED])
    assert (found.cuts, found.false_starts, found.answer) == ([], [], whole)
    continued.marks["first_audio"] = 1900.0  # its acknowledgement or answer had begun to play
    assert not truth.cut_in_two(continued, PAUSED) and truth.false_start(continued, PAUSED)
    (found,) = truth.match([continued, whole], [PAUSED])
    assert (found.cuts, found.false_starts, found.answer) == ([], [continued], whole)
    stood = _record(3, marks, "Set a timer for")  # not continued: cut in two
    assert truth.cut_in_two(stood, PAUSED) and not truth.false_start(stood, PAUSED)
    # a turn that had ended (its short reply taken whole at once) when the second part continued
    # it: not cancelled, but the next turn names it; its answer was heard, so a false start
    ended = _record(4, dict(marks, first_audio=1700.0), "Set a timer for")
    later = _record(
        5, {"speech_start": 310.0, "speech_end": 3090.0, "endpoint": 3390.0}, "Set a timer for ten"
    )
    later.continues = 4
    (found,) = truth.match([ended, later], [PAUSED])
    assert (found.cuts, found.false_starts, found.answer) == ([], [ended], later)


# -- real speech ----------------------------------------------------------------------------


async def test_a_request_with_a_long_pause_is_one_turn_on_the_real_models(
    engines: Any, speak: Any, tmp_path: Path
) -> None:
    """ "Set a timer for ... five minutes." with 850 ms between: longer than the hold (750 ms), so the
    first part ends a turn; the second continues it, and the timer is set for five minutes."""
    first, second = speak("Set a timer for"), speak("five minutes.")
    loud = np.flatnonzero(np.abs(first.astype(np.int32)) > 300)
    first = first[: loud[-1] + 1]
    onset = np.flatnonzero(np.abs(second.astype(np.int32)) > 300)[0]
    second = second[onset:]
    pcm = np.concatenate([silence(300), first, silence(850), second, silence(1500)]).astype("<i2").tobytes()

    async def run(continue_ms: int) -> tuple[list[TurnRecord], list[float]]:
        base = Config()
        config = replace(
            base,
            input=replace(base.input, realtime=False),
            vad=replace(base.vad, continue_ms=continue_ms),
            intents=IntentsConfig(timers_file=str(tmp_path / f"timers{continue_ms}.json")),
        )
        records: list[TurnRecord] = []
        pipeline = Pipeline(config, engines, MemorySink(), on_turn=records.append)
        await Daemon(pipeline).run(PcmSource(pcm, config.input))
        assert pipeline.timers is not None
        return records, [t.seconds for t in pipeline.timers.timers.running()]

    records, timers = await run(Config().vad.continue_ms)
    said = [(r.outcome, r.transcript, r.actions) for r in records]
    answered = [r for r in records if r.outcome == "answered"]
    assert len(answered) == 1 and [r.actions for r in records].count(["continued"]) == 1, said
    heard = re.sub(r"\b5\b", "five", answered[0].transcript.lower())
    assert "timer" in heard and "five" in heard, said
    assert answered[0].intent == "HassStartTimer" and timers == [300.0], (said, timers)
    # the option off: the same audio is cut in two, and no five-minute timer is set
    records, timers = await run(0)
    said = [(r.outcome, r.transcript, r.actions) for r in records]
    assert len([r for r in records if "endpoint" in r.marks]) == 2 and 300.0 not in timers, said


# -- the stop word right after a question ---------------------------------------------------


class ByLength(Transcriber):
    """Hears ``tail`` in a clip of at most ``tail_bytes``, ``whole`` in a longer one."""

    def __init__(self, whole: str, tail: str, tail_bytes: int) -> None:
        self.whole, self.tail, self.tail_bytes = whole, tail, tail_bytes
        self.heard: list[int] = []

    def transcribe(self, pcm: bytes, *args: Any, **kwargs: Any) -> AsrResult:
        self.heard.append(len(pcm))
        return AsrResult(self.tail if len(pcm) <= self.tail_bytes else self.whole, (), len(pcm) / 32)


async def _asr(engine: Transcriber, new_speech_ms: float) -> tuple[ReportLog, list[str]]:
    """A continued turn's utterance over playback: 1.6 s of the first part and the pause, then
    ``new_speech_ms`` of new speech (its audio from byte 51,200)."""
    log = ReportLog()
    stage = AsrStage(engine, log, stop_word=True)
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    end = 2600.0 + new_speech_ms
    pcm = bytes(int(32 * (end - 1000.0 + 300)))
    resumed = Resumption(2600.0, 51_200)
    await inbox.put(Utterance(2, pcm, 1000.0, end, end + 300, over_playback=True, resumed=resumed))
    await inbox.put(EndOfStream())
    await stage.run(inbox, outbox)
    return log, [
        m.text for m in (outbox.get_nowait() for _ in range(outbox.qsize())) if isinstance(m, Transcript)
    ]


async def test_stop_said_right_after_a_question_is_the_stop_word_not_part_of_it() -> None:
    engine = ByLength("What is the weather? Stop.", "Stop.", 40_000)
    log, said = await _asr(engine, 600.0)
    assert [r.text for r in log.of(StopWordHeard)] == ["Stop."] and said == []
    assert engine.heard[0] < 40_000  # the new speech alone was heard first
    # other words after the question: the whole utterance is the turn's
    engine = ByLength("What is the weather and tomorrow?", "and tomorrow", 40_000)
    log, said = await _asr(engine, 600.0)
    assert not log.of(StopWordHeard) and said == ["What is the weather and tomorrow?"]
    # new speech too long to be the stop word: only the whole is transcribed
    engine = ByLength("What is the weather? Stop, and tell me about tomorrow.", "Stop.", 40_000)
    log, said = await _asr(engine, 2000.0)
    assert not log.of(StopWordHeard) and len(engine.heard) == 1 and said
