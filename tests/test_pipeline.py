"""The pipeline's commands and events with fake engines: ask, say, cancel, mute, barge-in."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

from assistant.audio.sinks import MemorySink
from assistant.audio.sources import IdleSource
from assistant.config import Config
from assistant.daemon import Daemon
from assistant.events import Event, ReplyChunk, ReplyFinished, StateChanged, TranscriptReady, TurnFinished
from assistant.pipeline import Engines, Pipeline

from .fakes import FakeChat, FakeSynth, FakeTranscriber


async def _drive(pipeline: Pipeline, script: Callable[[Pipeline], Awaitable[None]]) -> list[Event]:
    """Run the pipeline on an idle source, run ``script``, stop; return the events published."""
    source = IdleSource()
    events = pipeline.events.subscribe()
    baseline = len(asyncio.all_tasks())

    async def go() -> None:
        while not pipeline._inboxes:  # the chain is wired
            await asyncio.sleep(0.01)
        await script(pipeline)
        source.stop()

    await asyncio.wait_for(asyncio.gather(Daemon(pipeline).run(source), go()), 20)
    assert len(asyncio.all_tasks()) == baseline, "the pipeline left tasks running"
    seen = []
    while not events.empty():
        seen.append(events.get_nowait())
    return seen


def _pipeline(chat: FakeChat, sink: MemorySink | None = None) -> Pipeline:
    config = replace(Config(), input=replace(Config().input, realtime=False))
    return Pipeline(
        config, Engines(FakeTranscriber([]), chat, FakeSynth()), sink or MemorySink(), barge_in=True
    )


async def _until_finished(pipeline: Pipeline, turn_id: int) -> None:
    while pipeline.tracker.is_open(turn_id):
        await asyncio.sleep(0.01)


async def test_ask_publishes_transcript_chunks_reply_and_latency() -> None:
    sink = MemorySink()
    pipeline = _pipeline(FakeChat("Paris is the capital, and it is lovely in spring."), sink)

    async def script(p: Pipeline) -> None:
        turn = await p.ask("capital?", "req-1")
        await _until_finished(p, turn)

    events = await _drive(pipeline, script)
    kinds = [type(e).__name__ for e in events]
    (heard,) = [e for e in events if isinstance(e, TranscriptReady)]
    assert heard.request_id == "req-1" and heard.text == "capital?" and heard.source == "text"
    chunks = [e for e in events if isinstance(e, ReplyChunk)]
    assert [c.text for c in chunks] == ["Paris is the capital,", "and it is lovely in spring."]
    assert all(c.request_id == "req-1" for c in chunks)
    (final,) = [e for e in events if isinstance(e, ReplyFinished)]
    assert final.text == "Paris is the capital, and it is lovely in spring." and final.request_id == "req-1"
    (done,) = [e for e in events if isinstance(e, TurnFinished)]
    assert (
        done.kind == "ask" and done.record["outcome"] == "answered" and "e2e" not in done.record["spans_ms"]
    )
    states = [e.state for e in events if isinstance(e, StateChanged)]
    assert states == ["thinking", "speaking", "idle"], kinds
    assert len(sink.turns) == 1


async def test_ask_without_speech_publishes_text_only() -> None:
    sink = MemorySink()
    pipeline = _pipeline(FakeChat("Hello there."), sink)

    async def script(p: Pipeline) -> None:
        await _until_finished(p, await p.ask("hi", speak=False))

    events = await _drive(pipeline, script)
    assert sink.turns == []
    assert any(isinstance(e, ReplyFinished) and e.text == "Hello there." for e in events)
    assert any(isinstance(e, TurnFinished) and e.record["outcome"] == "answered" for e in events)


async def test_say_speaks_text_as_is() -> None:
    sink, synth = MemorySink(), FakeSynth()
    config = replace(Config(), input=replace(Config().input, realtime=False))
    chat = FakeChat()
    pipeline = Pipeline(config, Engines(FakeTranscriber([]), chat, synth), sink)

    async def script(p: Pipeline) -> None:
        await _until_finished(p, await p.say("Dinner is ready. Come down!", "s1"))

    events = await _drive(pipeline, script)
    assert synth.texts == ["Dinner is ready.", "Come down!"] and chat.calls == []
    (done,) = [e for e in events if isinstance(e, TurnFinished)]
    assert done.kind == "say" and done.request_id == "s1" and len(sink.turns) == 1


async def test_cancel_stops_a_long_reply_and_the_next_ask_works() -> None:
    chat = FakeChat(" ".join(["word"] * 300), delay=0.01)
    sink = MemorySink()
    pipeline = _pipeline(chat, sink)

    async def script(p: Pipeline) -> None:
        first = await p.ask("talk a lot", "long")
        await asyncio.to_thread(chat.started.wait, 5)
        await asyncio.sleep(0.1)
        assert p.cancel() == [first]
        chat.reply, chat.delay = "Short answer.", 0.0
        await _until_finished(p, await p.ask("and now?", "short"))

    events = await _drive(pipeline, script)
    finished = [e for e in events if isinstance(e, TurnFinished)]
    assert [(e.request_id, e.record["outcome"]) for e in finished] == [
        ("long", "cancelled"),
        ("short", "answered"),
    ]
    assert chat.stopped.is_set() and len(chat.emitted) < 300 + 2
    assert not any(isinstance(e, ReplyFinished) and e.request_id == "long" for e in events)


async def test_new_ask_barges_in_on_the_turn_in_flight() -> None:
    chat = FakeChat(" ".join(["word"] * 300), delay=0.01)
    pipeline = _pipeline(chat)

    async def script(p: Pipeline) -> None:
        await p.ask("first")
        await asyncio.to_thread(chat.started.wait, 5)
        chat.reply, chat.delay = "Done.", 0.0
        await _until_finished(p, await p.ask("second"))

    events = await _drive(pipeline, script)
    outcomes = [e.record["outcome"] for e in events if isinstance(e, TurnFinished)]
    assert outcomes == ["cancelled", "answered"]


async def test_mute_and_listen_toggle_the_microphone() -> None:
    pipeline = _pipeline(FakeChat())

    async def script(p: Pipeline) -> None:
        p.set_muted(True)
        assert p._vad is not None and p._vad.muted
        p.listen()
        assert not p._vad.muted and not p.muted

    events = await _drive(pipeline, script)
    assert [e.muted for e in events if isinstance(e, StateChanged)] == [True, False]


async def test_reconfigure_applies_live_settings_without_new_engines() -> None:
    pipeline = _pipeline(FakeChat())
    engines = pipeline.engines
    base = pipeline.config
    new = replace(
        base,
        chunker=replace(base.chunker, first_min_chars=30),
        listen=replace(base.listen, mode="wake"),
        vad=replace(base.vad, aggressiveness=3, end_silence_ms=900),
        llm=replace(
            base.llm, max_tokens=7, system_prompt="Answer in French.", history_tokens=0, session_idle_s=9.0
        ),
    )

    async def script(p: Pipeline) -> None:
        p.reconfigure(new)
        assert p.engines is engines
        assert p._stages["chunker"].config.first_min_chars == 30  # type: ignore[attr-defined]
        assert p._stages["llm"].config.max_tokens == 7  # type: ignore[attr-defined]
        history = p._stages["llm"].history  # type: ignore[attr-defined]
        assert history.messages_for("hi", 0.0)[0] == {"role": "system", "content": "Answer in French."}
        assert (history.budget_tokens, history.idle_s) == (0, 9.0)
        assert p._vad is not None and p._vad.config.end_silence_ms == 900
        assert p.controller.activation.admit("what time is it", 0.0) is None  # wake mode now

    await _drive(pipeline, script)
