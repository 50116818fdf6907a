"""The error boundary and deadlines of the stages, and what the controller makes of a failure."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from assistant.audio.sinks import MemorySink
from assistant.config import Config, DeadlineConfig, LlmConfig
from assistant.daemon import Daemon
from assistant.engines import Engines
from assistant.errors import StageError
from assistant.events import ErrorEvent, Event
from assistant.messages import EndOfStream, Message, ReplyDone, Transcript
from assistant.pipeline import Pipeline
from assistant.stages.base import run_inbox
from assistant.stages.llm import LlmStage
from assistant.turn.kinds import Mark, TurnKind
from assistant.turn.reports import EndpointFinal, Failed, Marked, ReportLog, SpeculationVoid

from .fakes import FakeChat, FakeSynth, FakeTranscriber, controller, run_stage


class FaultyChat(FakeChat):
    """Fails its first call in the given way: raise ``error``, or hang for ``hang_s``."""

    def __init__(self, *, error: Exception | None = None, hang_s: float = 0.0, after: int = 0) -> None:
        super().__init__("Paris is the capital.")
        self.error, self.hang_s, self.after = error, hang_s, after
        self.failed = False

    def chat(self, messages: Any, on_token: Callable[[str], None], stop: Any = None, **options: Any) -> str:
        if self.failed:
            return super().chat(messages, on_token, stop, **options)
        self.failed = True
        for piece in ["Once", " upon"][: self.after]:  # mid-stream: some pieces, then the fault
            on_token(piece)
        if self.hang_s:
            time.sleep(self.hang_s)
            return "stop"
        assert self.error is not None
        raise self.error


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (RuntimeError("llama_decode returned -1"), "internal"),
        (KeyError("choices"), "internal"),
        (StageError("llm", "the server broke off"), "llm_failed"),
    ],
)
@pytest.mark.parametrize("after", [0, 2])
async def test_whatever_a_stage_raises_fails_only_that_turn(error: Exception, code: str, after: int) -> None:
    log = ReportLog()
    chat = FaultyChat(error=error, after=after)
    out = await run_stage(LlmStage(chat, LlmConfig(), log), [Transcript(1, "a"), Transcript(2, "capital?")])
    failed = log.of(Failed)
    assert [(f.turn_id, f.error.code, f.stage) for f in failed] == [(1, code, "llm")]
    assert failed[0].error.__cause__ is error or failed[0].error is error
    assert out[-1] == ReplyDone(2, "Paris is the capital.", "stop")  # the next turn is answered


async def test_a_model_call_past_its_deadline_is_abandoned_as_stage_timeout() -> None:
    log = ReportLog()
    chat = FaultyChat(hang_s=3.0, after=1)
    stage = LlmStage(chat, LlmConfig(), log, DeadlineConfig(llm_stall_s=0.2))
    start = time.monotonic()
    out = await run_stage(stage, [Transcript(1, "a"), Transcript(2, "capital?")])
    assert [(f.turn_id, f.error.code) for f in log.of(Failed)] == [(1, "stage_timeout")]
    assert out[-1] == ReplyDone(2, "Paris is the capital.", "stop")
    assert time.monotonic() - start < 2.5  # turn 2 did not wait for the hung call to return
    assert log.turns.stop_event(1).is_set()  # the abandoned call was told to stop


async def test_a_failure_while_closing_still_ends_the_stream() -> None:
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    inbox.put_nowait(EndOfStream())

    async def handle(_item: Message) -> None:
        return None

    async def broken_close() -> None:
        raise OSError("the device is gone")

    await run_inbox(inbox, outbox, ReportLog(), handle, broken_close, stage="output")
    assert outbox.get_nowait() == EndOfStream()


async def _ask_twice(chat: FakeChat, *, speak: bool = True) -> tuple[Pipeline, MemorySink, list[Event]]:
    config = replace(Config(), input=replace(Config().input, realtime=False))
    sink = MemorySink()
    pipeline = Pipeline(config, Engines(FakeTranscriber([]), chat, FakeSynth()), sink, barge_in=False)
    events = pipeline.events.subscribe()
    done: list[int] = []
    pipeline.on_turn = lambda rec: done.append(rec.turn_id)

    async def script() -> None:
        while "llm" not in pipeline._inboxes:  # noqa: SLF001 - wait for the chain to be built
            await asyncio.sleep(0.01)
        await pipeline.ask("first", "q1", speak=speak)
        await pipeline.ask("second", "q2", speak=speak)
        while len(done) < 2:
            await asyncio.sleep(0.01)
        await pipeline.controller.settle()  # the apology has played
        source.finished.set()

    source = _IdleSource()
    await asyncio.wait_for(asyncio.gather(Daemon(pipeline).run(source), script()), 20)
    return pipeline, sink, [events.get_nowait() for _ in range(events.qsize())]


class _IdleSource:
    """No audio: ends when told to."""

    def __init__(self) -> None:
        self.finished = asyncio.Event()

    async def run(self, outbox: asyncio.Queue[Message], clock: Any) -> None:
        clock.start()
        await self.finished.wait()
        clock.ended()
        await outbox.put(EndOfStream())


async def test_a_failed_spoken_turn_is_an_error_event_a_report_line_and_an_apology() -> None:
    chat = FaultyChat(error=RuntimeError("decode failed"))
    pipeline, sink, events = await _ask_twice(chat)
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert [(e.turn_id, e.request_id, e.code) for e in errors] == [(1, "q1", "internal")]
    outcomes = [(r.turn_id, r.outcome, r.error) for r in pipeline.tracker.finished]
    assert outcomes == [(1, "error", "internal"), (2, "answered", None)]
    apology = Config().output.apology
    assert len(sink.turns) == 2 and len(sink.turns[0]) == 2 * len(apology)  # FakeSynth: a sample a char
    assert pipeline.tracker.actions["apology_played"] == 1


async def test_a_failed_silent_ask_gets_no_apology() -> None:
    pipeline, sink, events = await _ask_twice(FaultyChat(error=RuntimeError("x")), speak=False)
    assert [e.code for e in events if isinstance(e, ErrorEvent)] == ["internal"]
    assert sink.turns == [] and pipeline.tracker.actions["apology_played"] == 0


async def test_a_failed_speculation_is_apologised_for_only_once_its_endpoint_comes() -> None:
    ctl = controller()
    spoken: list[int] = []

    async def sorry(turn_id: int) -> None:
        spoken.append(turn_id)

    ctl.output, ctl.tts = object(), FakeSynth()  # type: ignore[assignment]
    ctl._say_sorry = sorry  # type: ignore[method-assign]  # noqa: SLF001
    for turn_id in (1, 2):
        ctl.report(Marked(turn_id, Mark.SPEECH_START, 0.0))
        ctl.turns.hold(turn_id)
        ctl.report(Failed(turn_id, StageError("asr", "x"), "asr"))
    await asyncio.sleep(0)
    assert spoken == []  # the user may not have finished
    ctl.report(SpeculationVoid(1))  # they went on: that failure no longer matters
    ctl.report(EndpointFinal(2, 1000.0, 1300.0))  # they stopped: apologise
    await asyncio.sleep(0)
    assert spoken == [2]
    assert ctl.tracker.open_turns() == []  # the failed turn did not come back to life


async def test_an_abandoned_call_leaves_no_task_behind() -> None:
    before = len(asyncio.all_tasks())
    log = ReportLog()
    release = threading.Event()

    class Stuck(FakeChat):
        def chat(self, messages: Any, on_token: Callable[[str], None], stop: Any = None, **_: Any) -> str:
            release.wait(5)
            return "stop"

    await run_stage(
        LlmStage(Stuck(), LlmConfig(), log, DeadlineConfig(llm_stall_s=0.1)), [Transcript(1, "a")]
    )
    release.set()
    await asyncio.sleep(0.2)
    assert len(asyncio.all_tasks()) == before
    assert [f.error.code for f in log.of(Failed)] == ["stage_timeout"]


async def test_an_acknowledgement_the_sink_refuses_does_not_end_the_budget() -> None:
    """The budget's watch plays acknowledgements through the output; a sink that fails there
    must not end the budget's task (and with it the daemon's TaskGroup)."""
    from assistant.clock import StreamClock
    from assistant.config import LatencyConfig
    from assistant.turn.budget import BudgetKeeper
    from assistant.turn.latency import LatencyTracker

    class Refusing:
        calls = 0

        async def play_ack(self, turn_id: int, pcm: bytes, rate: int) -> bool:
            self.calls += 1
            raise OSError("the speaker is gone")

    clock = StreamClock(realtime=False)
    clock.start()
    tracker = LatencyTracker()
    budget = BudgetKeeper(LatencyConfig(), tracker, clock)
    budget.acks = [(b"\0\0" * 10, 100)]
    output = Refusing()
    task = asyncio.create_task(budget.run(output))
    for turn_id in (1, 2):
        rec = tracker.record(turn_id)
        rec.mark(Mark.SPEECH_END, -5000.0)  # long past its deadline
        rec.transcript = "hello"
        rec.mark(Mark.TRANSCRIPT, -4000.0)
        budget.committed(turn_id, -5000.0)
    while output.calls < 2:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert not task.done()  # still watching
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_voice_that_fails_at_start_leaves_the_daemon_without_acknowledgements() -> None:
    """A remote voice that is down when the daemon starts: no acknowledgements, and it starts."""
    from assistant.clock import StreamClock
    from assistant.config import LatencyConfig
    from assistant.turn.budget import BudgetKeeper
    from assistant.turn.latency import LatencyTracker

    class Down(FakeSynth):
        def synthesize(self, text: str, on_audio: Callable[[bytes], None], stop: Any = None) -> None:
            raise StageError("tts", "tcp://127.0.0.1:1: connection refused")

    budget = BudgetKeeper(LatencyConfig(), LatencyTracker(), StreamClock(realtime=True))
    await budget.prepare(Down())
    assert budget.acks == []
    await budget.prepare(FakeSynth())  # back: the next start has them
    assert len(budget.acks) == len(LatencyConfig().acks)


async def test_a_failure_after_the_turn_was_cancelled_is_only_logged() -> None:
    """An ask cancelled while its model call hangs: the later timeout is no second answer."""
    ctl = controller()
    events = ctl.events.subscribe()
    turn_id = ctl.begin(TurnKind.ASK, "q1", text="hello")
    assert ctl.cancel(turn_id) == [turn_id]
    ctl.report(Failed(turn_id, StageError("llm", "late"), "llm"))
    seen = [events.get_nowait() for _ in range(events.qsize())]
    assert not [e for e in seen if isinstance(e, ErrorEvent)]
    assert [r.outcome for r in ctl.tracker.finished] == ["cancelled"]


async def test_a_failed_speculation_that_the_user_talks_past_reports_no_error() -> None:
    ctl = controller()
    events = ctl.events.subscribe()
    ctl.report(Marked(1, Mark.SPEECH_START, 0.0))
    ctl.turns.hold(1)
    ctl.report(Failed(1, StageError("asr", "x"), "asr"))
    ctl.report(SpeculationVoid(1))
    seen = [events.get_nowait() for _ in range(events.qsize())]
    assert not [e for e in seen if isinstance(e, ErrorEvent)] and not ctl.tracker.finished
    ctl.report(Marked(2, Mark.SPEECH_START, 0.0))
    ctl.turns.hold(2)
    ctl.report(Failed(2, StageError("asr", "x"), "asr"))
    ctl.report(EndpointFinal(2, 900.0, 1200.0))
    seen = [events.get_nowait() for _ in range(events.qsize())]
    assert [(e.turn_id, e.code) for e in seen if isinstance(e, ErrorEvent)] == [(2, "asr_failed")]
    assert [(r.turn_id, r.outcome) for r in ctl.tracker.finished] == [(2, "error")]
