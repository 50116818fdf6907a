"""Speculative turn-taking, adaptive endpointing and acknowledgements, in real time.

Real webrtcvad on real speech (espeak-ng); fake ASR, LLM and TTS engines that record what they
got, so the tests see exactly which turns were spoken.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.audio.sinks import MemorySink
from assistant.audio.sources import PcmSource
from assistant.config import Config, LatencyConfig
from assistant.contracts import AsrResult
from assistant.daemon import Daemon
from assistant.pipeline import Engines, Pipeline
from assistant.turn.latency import TurnRecord

from .conftest import silence
from .fakes import FakeChat, FakeSynth, FakeTranscriber


class SlowChat(FakeChat):
    """Waits ``first_delay`` seconds before the first token (a slow model)."""

    def __init__(self, reply: str, first_delay: float) -> None:
        super().__init__(reply)
        self.first_delay = first_delay

    def chat(
        self,
        messages: list[dict[str, str]],
        on_token: Callable[[str], None],
        stop: threading.Event | None = None,
        **options: Any,
    ) -> str:
        time.sleep(self.first_delay)
        return super().chat(messages, on_token, stop, **options)


class SlowSynth(FakeSynth):
    """Takes ``ms_per_char`` per character before its audio (a slow voice)."""

    def __init__(self, ms_per_char: float) -> None:
        super().__init__()
        self.ms_per_char = ms_per_char

    def synthesize(
        self, text: str, on_audio: Callable[[bytes], None], stop: threading.Event | None = None
    ) -> None:
        time.sleep(self.ms_per_char * len(text) / 1000)
        super().synthesize(text, on_audio, stop)


def _config(latency: LatencyConfig | None = None, **vad: Any) -> Config:
    base = Config()
    return replace(
        base,
        input=replace(base.input, realtime=True, tail_silence_ms=300),
        vad=replace(base.vad, **vad),
        latency=latency or LatencyConfig(acks=("One moment.",)),
    )


async def _run(
    config: Config,
    pcm: np.ndarray,
    asr: FakeTranscriber,
    chat: FakeChat,
    synth: FakeSynth | None = None,
) -> tuple[Pipeline, MemorySink, list[TurnRecord]]:
    sink, records = MemorySink(), []
    synth = synth or FakeSynth()
    pipeline = Pipeline(config, Engines(asr, chat, synth), sink, on_turn=records.append)
    await Daemon(pipeline).run(PcmSource(pcm.tobytes(), config.input))
    return pipeline, sink, records


@pytest.fixture
def halves(espeak: Any, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    return espeak("what is the", tmp_path), espeak("capital of France", tmp_path)


async def test_speculation_discarded_when_speech_resumes(halves: tuple[np.ndarray, np.ndarray]) -> None:
    first, second = halves
    loud = np.flatnonzero(np.abs(first.astype(np.int32)) > 300)
    first = first[: loud[-1] + 1]  # cut espeak's own trailing silence: the pause is ours
    pcm = np.concatenate([silence(300), first, silence(350), second, silence(1200)])
    asr = FakeTranscriber(["What is the", "What is the capital of France?", "What is the capital of France?"])
    chat = FakeChat("Paris.")
    config = _config(speculate_after_ms=150, end_silence_ms=600)
    pipeline, sink, records = await _run(config, pcm, asr, chat)
    vad = pipeline._vad
    assert vad is not None and vad.discarded >= 1 and vad.speculations >= 2
    # the void speculation was transcribed and answered, but nothing of it was heard
    assert len(chat.calls) >= 2
    (rec,) = records
    assert rec.outcome == "answered" and rec.transcript == "What is the capital of France?"
    assert len(sink.turns) == 1 and len(sink.turns[0]) == 2 * len("Paris.")
    assert rec.turn_id > 1  # the first id went to the void speculation


@pytest.mark.parametrize(
    ("heard", "waits", "handled_by"),
    [
        ("What is the capital of France?", (300, 600), "llm"),  # looks complete: the quick end
        ("what is the", (1200, 1300), "llm"),  # open: held for vad.hold_silence_ms
        ("What time is it?", (150, 300), "intent"),  # a recognised command: ended at once
    ],
)
async def test_adaptive_endpoint(
    halves: tuple[np.ndarray, np.ndarray], heard: str, waits: tuple[int, int], handled_by: str
) -> None:
    first, second = halves
    pcm = np.concatenate([silence(300), first, second, silence(1500)])
    config = _config(
        speculate_after_ms=150, end_silence_ms=900, quick_end_silence_ms=300, hold_silence_ms=1200
    )
    _, _, records = await _run(config, pcm, FakeTranscriber([heard] * 3), FakeChat("Paris."))
    rec = records[-1]
    wait = rec.marks["endpoint"] - rec.marks["speech_end"]
    assert waits[0] <= wait < waits[1], rec.marks
    assert rec.handled_by == handled_by
    if waits[0] < 900:
        assert rec.marks["transcript"] < rec.marks["endpoint"]  # heard before the endpoint


@pytest.mark.parametrize(("delay", "acked"), [(1.2, True), (0.0, False)])
async def test_ack_played_only_when_the_answer_would_be_late(
    halves: tuple[np.ndarray, np.ndarray], delay: float, acked: bool
) -> None:
    first, second = halves
    pcm = np.concatenate([silence(300), first, second, silence(2000)])
    # one turn: espeak's pause between the halves ends it, and the second half is no continuation
    config = _config(speculate_after_ms=0, end_silence_ms=300, continue_ms=0)
    pipeline, sink, records = await _run(
        config, pcm, FakeTranscriber(["Capital of France?"]), SlowChat("Paris is the capital.", delay)
    )
    (rec,) = records
    assert ("ack_played" in rec.actions) is acked
    assert pipeline.tracker.actions["ack_played"] == int(acked)
    if acked:  # the acknowledgement, then the answer, in one turn, in that order
        assert rec.marks["first_audio"] < rec.marks["first_answer_audio"]
        ack = pipeline.controller.budget.acks[0][0]
        assert sink.turns[0].startswith(ack) and len(sink.turns[0]) == len(ack) + 2 * len(
            "Paris is the capital."
        )
    else:
        assert rec.marks["first_audio"] == rec.marks["first_answer_audio"]


async def test_no_ack_when_the_answer_is_being_synthesized_in_time(
    halves: tuple[np.ndarray, np.ndarray],
) -> None:
    """The answer's first chunk takes ~420 ms to synthesize and starts ~350 ms after the end of
    speech: later than the due time (600), well before the deadline (1200). An acknowledgement
    would only have pushed the answer back by its own length, so none is played."""
    first, second = halves
    pcm = np.concatenate([silence(300), first, second, silence(2500)])
    latency = LatencyConfig(budget_ms=1200, ack_margin_ms=600, acks=("One moment.",))
    config = _config(latency, speculate_after_ms=0, end_silence_ms=300, continue_ms=0)
    answer = "Paris is the capital."
    pipeline, sink, records = await _run(
        config, pcm, FakeTranscriber(["Capital of France?"]), FakeChat(answer), SlowSynth(20.0)
    )
    (rec,) = records
    heard_after = rec.marks["first_answer_audio"] - rec.marks["speech_end"]
    assert 600 < heard_after < 1200, rec.marks  # past the due time: the old rule would have acked
    assert rec.answer_eta_ms is not None and rec.answer_eta_ms <= rec.marks["speech_end"] + 1200
    assert "ack_played" not in rec.actions and pipeline.tracker.actions["ack_played"] == 0
    assert sink.turns == [b"\x01\x00" * len(answer)]


class SlowTranscriber(FakeTranscriber):
    """Takes ``delay`` seconds per utterance (a slow ASR, e.g. a fallback to the full window)."""

    def __init__(self, texts: list[str], delay: float) -> None:
        super().__init__(texts)
        self.delay = delay

    def transcribe(self, pcm: bytes, deadline: float | None = None) -> Any:
        time.sleep(self.delay)
        return super().transcribe(pcm)


@pytest.mark.parametrize(("text", "acked"), [("Capital of France?", True), ("", False)])
async def test_a_slow_transcript_does_not_hold_the_ack_back(
    halves: tuple[np.ndarray, np.ndarray], text: str, acked: bool
) -> None:
    """ASR takes 1.2 s: the acknowledgement plays at the last call, before the transcript, so the
    user hears something within the budget; what ASR calls no speech in time gets none."""
    first, second = halves
    loud = np.flatnonzero(np.abs(first.astype(np.int32)) > 300)
    first = first[: loud[-1] + 1]  # one utterance: no pause between the halves
    pcm = np.concatenate([silence(300), first, second, silence(2500)])
    config = _config(
        LatencyConfig(acks=("One moment.",), transcript_ms=0), speculate_after_ms=0, end_silence_ms=300
    )
    delay = 1.2 if acked else 0.1
    pipeline, sink, records = await _run(
        config, pcm, SlowTranscriber([text], delay), FakeChat("Paris is the capital.")
    )
    assert pipeline.tracker.actions["ack_played"] == int(acked), [(r.marks, r.actions) for r in records]
    if acked:
        (rec,) = records
        assert "ack_played" in rec.actions
        heard_after = rec.marks["first_audio"] - rec.marks["speech_end"]
        assert heard_after < config.latency.budget_ms + 50 < rec.marks["transcript"] - rec.marks["speech_end"]
    else:
        assert records == [] and sink.turns == []


class HurriedTranscriber(FakeTranscriber):
    """Nothing usable from the first pass, and no time for a second (``AsrResult.hurried``)."""

    def transcribe(self, pcm: bytes, deadline: float | None = None) -> Any:
        self.calls.append(len(pcm))
        assert deadline is not None  # live input: the stage says when the words are wanted
        return AsrResult(
            "", ("thank you thank you thank you",), len(pcm) / 32, 1000, False, "repetition", True
        )


@pytest.mark.parametrize("asr", ["late", "hurried"])
async def test_no_usable_words_in_time_gets_a_reprompt_within_the_budget(
    halves: tuple[np.ndarray, np.ndarray], asr: str
) -> None:
    """ASR overruns ``latency.transcript_ms`` (2 s for an utterance), or has nothing usable and no
    time for its second pass: the user hears the reprompt within the budget, not silence, and the
    late transcript, when it comes, answers nothing. (The transcription starts at the pause; the
    reprompt waits for the endpoint.)"""
    first, second = halves
    loud = np.flatnonzero(np.abs(first.astype(np.int32)) > 300)
    pcm = np.concatenate([silence(300), first[: loud[-1] + 1], second, silence(3000)])
    latency = LatencyConfig(acks=("One moment.",), transcript_ms=550)  # well inside the budget
    config = _config(latency, speculate_after_ms=120, end_silence_ms=600)
    engine = SlowTranscriber(["Capital of France?"], 2.0) if asr == "late" else HurriedTranscriber([])
    chat = FakeChat("Paris is the capital.")
    pipeline, sink, records = await _run(config, pcm, engine, chat)
    (rec,) = records
    assert rec.outcome == "reprompted" and rec.actions == ["reprompt"], rec
    heard_after = rec.marks["first_audio"] - rec.marks["speech_end"]
    assert heard_after < config.latency.budget_ms, rec.marks
    if asr == "late":
        assert heard_after >= config.latency.transcript_ms, rec.marks
    assert sink.turns == [pipeline.controller._announced[config.output.reprompt][0]]
    assert chat.calls == [] and pipeline.tracker.actions["ack_played"] == 0


async def test_a_transcription_that_starts_at_the_endpoint_has_time_of_its_own(
    halves: tuple[np.ndarray, np.ndarray],
) -> None:
    """No speculation: the utterance reaches ASR 600 ms after the end of speech, past
    ``transcript_ms``; a 300 ms transcription is no overrun, and the question is answered."""
    first, second = halves
    loud = np.flatnonzero(np.abs(first.astype(np.int32)) > 300)
    pcm = np.concatenate([silence(300), first[: loud[-1] + 1], second, silence(2500)])
    config = _config(speculate_after_ms=0, end_silence_ms=600)
    _, _, records = await _run(config, pcm, SlowTranscriber(["Capital of France?"], 0.3), FakeChat("Paris."))
    (rec,) = records
    assert rec.outcome == "answered" and "reprompt" not in rec.actions, rec


@pytest.mark.parametrize(
    ("engines", "late"),
    [("chat", "first_token_late"), ("voice", "first_audio_late"), ("none", None), ("off", None)],
)
async def test_an_answer_past_its_deadline_gets_a_holding_phrase(
    halves: tuple[np.ndarray, np.ndarray], engines: str, late: str | None
) -> None:
    """``latency.hold_ms`` (1.5 s here) passes with no answer playing: after the acknowledgement
    the user hears a holding phrase, named by the stage that was late (the LLM's first token, or
    the voice's first chunk), then the answer. An answer in time, or ``hold_ms = 0``: none."""
    first, second = halves
    loud = np.flatnonzero(np.abs(first.astype(np.int32)) > 300)
    pcm = np.concatenate([silence(300), first[: loud[-1] + 1], second, silence(4000)])
    hold_ms = 0 if engines == "off" else 1500
    latency = LatencyConfig(acks=("Hmm.",), holds=("One moment.",), hold_ms=hold_ms)
    config = _config(latency, speculate_after_ms=0, end_silence_ms=300, continue_ms=0)
    answer = "Paris is the capital."
    chat = SlowChat(answer, 2.2 if engines in ("chat", "off") else 0.0)
    synth = SlowSynth(400.0) if engines == "voice" else FakeSynth()  # "Paris": 2 s
    pipeline, sink, records = await _run(config, pcm, FakeTranscriber(["Capital of France?"]), chat, synth)
    (rec,) = records
    budget = pipeline.controller.budget
    assert rec.outcome == "answered", rec
    if late is None:
        assert not {"first_token_late", "first_audio_late"} & set(rec.actions), rec.actions
        assert budget.holds == [] if engines == "off" else len(budget.holds) == 1
        return
    assert rec.actions[:2] == ["ack_played", late], rec.actions
    assert pipeline.tracker.actions[late] == 1
    ack, hold = budget.acks[0][0], budget.holds[0][0]
    heard = sink.turns[0]
    assert heard.startswith(ack + hold) and heard.endswith(b"\x01\x00" * len(answer)), len(heard)
    assert rec.marks["first_answer_audio"] - rec.marks["speech_end"] > 1500
