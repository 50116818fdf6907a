"""What every stage shares: the inbox loop with its error boundary, and model calls off the loop.

A stage reads its inbox until ``EndOfStream``, which it forwards before returning. Items of a
cancelled turn are dropped wherever they are queued. Stages never block the event loop: model
work goes to a worker thread (``call_in_thread``, ``stream_from_thread``), each call under its
stage's deadline (``[deadlines]``): past it the call is abandoned (its stop event set, its thread
left to finish on its own) and the turn fails with ``stage_timeout``.

The error boundary (``run_inbox``): whatever ``handle`` raises for an item, our own errors and
foreign ones alike, becomes that item's turn's coded error, reported to the turn controller as
``Failed``; the loop goes on with the next item. Only cancellation passes through. See
``docs/architecture.md``, "Errors".
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from assistant.errors import AssistantError, InternalError, StageTimeoutError
from assistant.messages import EndOfStream, Message, TurnMessage
from assistant.turn.registry import Turns
from assistant.turn.reports import Failed, TurnChannel

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

Queue = asyncio.Queue[Message]


class Stage(Protocol):
    """A pipeline stage: reads its inbox until ``EndOfStream``, which it forwards."""

    async def run(self, inbox: Queue, outbox: Queue) -> None: ...


def is_dropped(turns: Turns, item: Message) -> bool:
    """True if ``item`` belongs to a cancelled turn."""
    return isinstance(item, TurnMessage) and turns.is_cancelled(item.turn_id)


async def run_inbox(
    inbox: Queue,
    outbox: Queue,
    channel: TurnChannel,
    handle: Callable[[Message], Awaitable[None]],
    on_end: Callable[[], Awaitable[None]] | None = None,
    *,
    stage: str,
) -> None:
    """Call ``handle`` for each live item until ``EndOfStream``; then ``on_end`` and forward it.

    The stage's error boundary: an exception from ``handle`` fails the item's turn (``Failed``)
    and the loop goes on; one from ``on_end`` is logged, and ``EndOfStream`` still goes on."""
    while True:
        item = await inbox.get()
        if isinstance(item, EndOfStream):
            if on_end is not None:
                try:
                    await on_end()
                except Exception:
                    _LOGGER.exception("%s: failed while closing", stage)
            await outbox.put(item)
            return
        if is_dropped(channel.turns, item):
            continue
        try:
            await handle(item)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            fail(channel, stage, item.turn_id if isinstance(item, TurnMessage) else None, err)


def fail(channel: TurnChannel, stage: str, turn_id: int | None, err: Exception) -> None:
    """Report ``err`` as the turn's coded error: our own keep their code, anything else is
    ``internal`` (with its traceback in the log). Without a turn it is only logged."""
    if isinstance(err, AssistantError):
        coded = err
        _LOGGER.error("turn %s: %s: [%s] %s", turn_id, stage, err.code, err.message, exc_info=err.__cause__)
    else:
        coded = InternalError(stage, f"the {stage} stage failed unexpectedly: {type(err).__name__}: {err}")
        coded.__cause__ = err
        _LOGGER.error("turn %s: %s: unexpected error", turn_id, stage, exc_info=err)
    if turn_id is not None:
        channel.report(Failed(turn_id, coded, stage))


def _abandon(worker: asyncio.Future[Any]) -> None:
    """Leave a worker past its deadline to finish on its own; its outcome is only logged."""

    def done(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            _LOGGER.info("an abandoned model call ended with %r", future.exception())

    worker.add_done_callback(done)


async def call_in_thread(
    work: Callable[[], R], *, stage: str, deadline_s: float, stop: threading.Event | None = None
) -> R:
    """``work()`` in a worker thread, abandoned as ``stage_timeout`` after ``deadline_s``."""
    worker = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.wait_for(asyncio.shield(worker), deadline_s)
    except TimeoutError:
        if stop is not None:
            stop.set()
        _abandon(worker)
        raise StageTimeoutError(
            stage, f"the {stage} model took longer than {deadline_s:g} s; abandoned"
        ) from None


async def stream_from_thread(
    work: Callable[[Callable[[T], None]], R],
    forward: Callable[[T], Awaitable[None]],
    stop: threading.Event,
    *,
    stage: str,
    stall_s: float,
) -> R:
    """Run ``work(emit)`` in a worker thread; ``forward`` each emitted item on the loop, in order.

    Like starlette's ``iterate_in_threadpool``, but the producer is a callback-driven model call
    (a token stream, a synthesis) consumed entirely inside its thread. If this coroutine is
    cancelled, ``stop`` is set so the worker stops at its next check. When the worker emits
    nothing for ``stall_s`` (its first item included; time spent in ``forward`` not counted), it
    is abandoned: ``stop`` is set and ``StageTimeoutError`` raised.
    """
    loop = asyncio.get_running_loop()
    pipe: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()

    def emit(item: T) -> None:
        loop.call_soon_threadsafe(pipe.put_nowait, (False, item))

    worker = asyncio.ensure_future(asyncio.to_thread(work, emit))
    worker.add_done_callback(lambda _: pipe.put_nowait((True, None)))
    abandoned = False
    try:
        while True:
            try:
                async with asyncio.timeout(stall_s):
                    done, item = await pipe.get()
            except TimeoutError:
                abandoned = True
                stop.set()
                _abandon(worker)
                raise StageTimeoutError(
                    stage, f"the {stage} model produced nothing for {stall_s:g} s; abandoned"
                ) from None
            if done:
                break
            await forward(item)
        return await worker
    finally:
        if not worker.done() and not abandoned:
            stop.set()
            await asyncio.wait([worker], timeout=5.0)
