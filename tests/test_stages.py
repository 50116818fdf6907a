"""Stages with fake engines: what goes in, what comes out, and turn cancellation."""

from __future__ import annotations

import asyncio

from assistant.audio.sinks import MemorySink
from assistant.config import ChunkerConfig, LlmConfig
from assistant.messages import (
    AudioDone,
    AudioOut,
    EndOfStream,
    Message,
    ReplyDone,
    SpeechStarted,
    TextChunk,
    TextDone,
    Token,
    Transcript,
    Utterance,
)
from assistant.stages.asr import AsrStage
from assistant.stages.base import Queue
from assistant.stages.chunker import ChunkerStage
from assistant.stages.llm import LlmStage
from assistant.stages.output import OutputStage
from assistant.stages.tts import TtsStage
from assistant.turn.reports import ReportLog

from .fakes import FakeChat, FakeSynth, FakeTranscriber, controller, run_stage


def _utt(turn_id: int, end_ms: float = 1000.0) -> Utterance:
    return Utterance(turn_id, b"\x00\x00" * 1600, 100.0, end_ms, end_ms + 600)


async def test_asr_stage_marks_and_drops_non_speech() -> None:
    ctl = controller()
    tracker = ctl.tracker
    asr = FakeTranscriber(["What time is it?", ""])
    stage = AsrStage(asr, ctl)
    out = await run_stage(
        stage, [SpeechStarted(1, 100.0), _utt(1), SpeechStarted(2, 3000.0), _utt(2, 3500.0)]
    )
    assert out == [Transcript(1, "What time is it?")]
    assert ctl.tracker.record(1).transcript == "What time is it?"
    rec = tracker.record(1)
    assert rec.marks["speech_end"] == 1000.0 and rec.marks["endpoint"] == 1600.0
    assert "transcript" in rec.marks
    assert tracker.open_turns() == [1]  # turn 2 had no speech: discarded
    assert stage.no_speech == 1


async def test_llm_stage_streams_tokens_then_done() -> None:
    ctl = controller()
    tracker = ctl.tracker
    chat = FakeChat("Paris is the capital.")
    out = await run_stage(LlmStage(chat, LlmConfig(), ctl), [Transcript(1, "capital?")])
    assert [m.text for m in out if isinstance(m, Token)] == ["Paris", " is", " the", " capital."]
    assert out[-1] == ReplyDone(1, "Paris is the capital.", "stop")
    assert chat.calls[0][0]["role"] == "system"
    assert chat.calls[0][1] == {"role": "user", "content": "capital?"}
    assert {"first_token", "first_speakable_token"} <= tracker.record(1).marks.keys()


async def test_chunker_stage_cuts_clauses_and_ends_turn() -> None:
    tokens = [Token(1, t) for t in ["The", " capital", " is", " Paris.", " It", " is", " big."]]
    out = await run_stage(ChunkerStage(ChunkerConfig(), ReportLog()), [*tokens, ReplyDone(1, "", "stop")])
    # the first chunk ends before the predicate (``chunker.first_break_words``), later ones at sentences
    assert out == [
        TextChunk(1, "The capital", 0),
        TextChunk(1, "is Paris.", 1),
        TextChunk(1, "It is big.", 2),
        TextDone(1),
    ]


async def test_tts_and_output_write_audio_and_finish_turn() -> None:
    ctl, sink = controller(), MemorySink()
    tracker = ctl.tracker
    audio = await run_stage(TtsStage(FakeSynth(), ctl), [TextChunk(1, "Hello there.", 0), TextDone(1)])
    assert audio == [AudioOut(1, b"\x01\x00" * 12, 100), AudioDone(1)]
    tracker.record(1)  # the turn is open (the ASR stage or a command opened it)
    await run_stage(OutputStage(sink, ctl), audio)
    assert sink.turns == [b"\x01\x00" * 12]
    (rec,) = tracker.finished
    assert rec.outcome == "answered" and {"first_audio", "first_answer_audio", "done"} <= rec.marks.keys()


async def test_cancelled_turn_items_are_dropped_in_every_stage() -> None:
    ctl = controller()
    ctl.turns.cancel(1)
    items: list[Message] = [
        Transcript(1, "a"),
        Token(1, "x"),
        ReplyDone(1, "x", "stop"),
        TextChunk(1, "x", 0),
        TextDone(1),
        AudioOut(1, b"\0\0", 100),
        AudioDone(1),
        Transcript(2, "b"),
    ]
    synth = FakeSynth()
    chat = FakeChat("ok.")
    for stage in (
        LlmStage(chat, LlmConfig(), ctl),
        ChunkerStage(ChunkerConfig(), ctl),
        TtsStage(synth, ctl),
    ):
        out = await run_stage(stage, items)
        assert all(getattr(m, "turn_id", 2) == 2 for m in out), (stage, out)
    assert [c[1]["content"] for c in chat.calls] == ["b"]
    assert synth.texts == []


async def test_cancel_stops_generation_mid_stream() -> None:
    ctl = controller()
    turns = ctl.turns
    chat = FakeChat(" ".join(["word"] * 200), delay=0.01)
    stage = LlmStage(chat, LlmConfig(), ctl)
    inbox: Queue = asyncio.Queue()
    outbox: Queue = asyncio.Queue()
    inbox.put_nowait(Transcript(1, "talk"))
    inbox.put_nowait(Transcript(2, "again"))
    inbox.put_nowait(EndOfStream())
    task = asyncio.create_task(stage.run(inbox, outbox))
    await asyncio.to_thread(chat.started.wait, 5)
    await asyncio.sleep(0.1)
    turns.cancel(1)
    await asyncio.wait_for(task, 10)
    out = []
    while not outbox.empty():
        out.append(outbox.get_nowait())
    assert chat.stopped.is_set()
    first = [m for m in out if getattr(m, "turn_id", None) == 1]
    assert 0 < len(first) < 100 and not any(isinstance(m, ReplyDone) for m in first)
    assert isinstance(out[-2], ReplyDone) and out[-2].turn_id == 2
    assert isinstance(out[-1], EndOfStream)
