"""What every stage shares: the turn registry and the inbox loop.

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

from ..messages import EndOfStream, Message, TurnMessage

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

Queue = asyncio.Queue[Message]


class Turns:
    """Which turns are cancelled. Shared by all stages of one pipeline.

    ``stop_event(turn_id)`` is a ``threading.Event`` that model worker threads poll, so a
    generation or synthesis stops mid-way when its turn is cancelled.
    """

    def __init__(self) -> None:
        self._cancelled: set[int] = set()
        self._events: dict[int, threading.Event] = {}
        self.cancel_count = 0
        """How many turns were cancelled."""
        self._last_id = 0
        self._silent: set[int] = set()
        self._held: dict[int, asyncio.Event] = {}

    def hold(self, turn_id: int) -> None:
        """The turn is a speculation: its audio waits until ``release`` (or is dropped on cancel)."""
        self._held.setdefault(turn_id, asyncio.Event())

    def release(self, turn_id: int) -> None:
        """The turn's endpoint is final: its audio may play."""
        event = self._held.pop(turn_id, None)
        if event is not None:
            event.set()

    def is_held(self, turn_id: int) -> bool:
        return turn_id in self._held

    async def wait_released(self, turn_id: int) -> bool:
        """Wait until the turn may play; False if it was cancelled instead."""
        event = self._held.get(turn_id)
        if event is not None:
            await event.wait()
        return not self.is_cancelled(turn_id)

    def set_silent(self, turn_id: int) -> None:
        """The turn's reply is published as text but not spoken."""
        self._silent.add(turn_id)

    def is_silent(self, turn_id: int) -> bool:
        return turn_id in self._silent

    def new_id(self) -> int:
        """A fresh turn id: 1, 2, 3... in the order turns begin, whatever their source."""
        self._last_id += 1
        return self._last_id

    def cancel(self, turn_id: int) -> None:
        if turn_id in self._cancelled:
            return
        self._cancelled.add(turn_id)
        self.cancel_count += 1
        self.stop_event(turn_id).set()
        self.release(turn_id)
        _LOGGER.info("turn %d cancelled", turn_id)

    def is_cancelled(self, turn_id: int) -> bool:
        return turn_id in self._cancelled

    def stop_event(self, turn_id: int) -> threading.Event:
        event = self._events.get(turn_id)
        if event is None:
            event = self._events[turn_id] = threading.Event()
            if turn_id in self._cancelled:
                event.set()
        return event

    def forget(self, turn_id: int) -> None:
        """Drop the turn's state once every stage is done with it (bounded memory)."""
        self._events.pop(turn_id, None)
        self._silent.discard(turn_id)
        if len(self._cancelled) > 10_000:
            self._cancelled = {t for t in self._cancelled if t > self._last_id - 1000}


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
