"""Which turns are live, held or cancelled: the registry every stage of one pipeline shares.

A cancelled turn's items are dropped wherever they are queued (``stages.base.run_inbox``), and its
``stop_event`` stops model work mid-way in worker threads. See ``docs/architecture.md``.
"""

from __future__ import annotations

import asyncio
import logging
import threading

_LOGGER = logging.getLogger(__name__)


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
