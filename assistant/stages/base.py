"""What every stage shares: the inbox loop and running model work off the event loop.

A stage reads its inbox until ``EndOfStream``, which it forwards before returning. Items of a
cancelled turn are dropped wherever they are queued. Stages never block the event loop: model
work goes through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from assistant.messages import EndOfStream, Message, TurnMessage
from assistant.turn.registry import Turns

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
    turns: Turns,
    handle: Callable[[Message], Awaitable[None]],
    on_end: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Call ``handle`` for each live item until ``EndOfStream``; then ``on_end`` and forward it."""
    while True:
        item = await inbox.get()
        if isinstance(item, EndOfStream):
            if on_end is not None:
                await on_end()
            await outbox.put(item)
            return
        if is_dropped(turns, item):
            continue
        await handle(item)


async def stream_from_thread(
    work: Callable[[Callable[[T], None]], R],
    forward: Callable[[T], Awaitable[None]],
    stop: threading.Event,
) -> R:
    """Run ``work(emit)`` in a worker thread; ``forward`` each emitted item on the loop, in order.

    Like starlette's ``iterate_in_threadpool``, but the producer is a callback-driven model call
    (a token stream, a synthesis) consumed entirely inside its thread. If this coroutine is
    cancelled, ``stop`` is set so the worker stops at its next check.
    """
    loop = asyncio.get_running_loop()
    pipe: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()

    def emit(item: T) -> None:
        loop.call_soon_threadsafe(pipe.put_nowait, (False, item))

    worker = asyncio.ensure_future(asyncio.to_thread(work, emit))
    worker.add_done_callback(lambda _: pipe.put_nowait((True, None)))
    try:
        while True:
            done, item = await pipe.get()
            if done:
                break
            await forward(item)
        return await worker
    finally:
        if not worker.done():
            stop.set()
            await asyncio.wait([worker], timeout=5.0)
