"""The timers' keeper: the one task that waits for timers to end, and rings them.

    TimerKeeper.run(announce)    in the daemon's TaskGroup (``Pipeline.helpers``, task ``timers``)

Handlers change the timers through the keeper (``start``, ``cancel``, ``silence``), only once
their turn is committed. Each change wakes the task, which writes the file (in a thread) and
sleeps until the next timer ends. When one ends it rings: its alarm ("Your 10 minute timer is
done.") is spoken through the output (``announce``), again every ``repeat_s`` seconds until
"stop" silences it or ``intents.alarm_limit_s`` has passed. What to say and when is decided by
``step(now)``, which reads no clock: tests drive it with a fake one.

Timers that ended while the daemon was not running are said once at start-up ("Your 10 minute
timer ended while I was off.") and dropped: they do not ring, since nobody asked for an alarm
minutes or days late, but the user learns that the time is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from assistant.intents.timers import Timer, Timers, load_timers, save_timers

_LOGGER = logging.getLogger(__name__)

MAX_SLEEP_S = 30.0
"""The task looks at the clock at least this often (the wall clock may jump, a device may sleep)."""

Announce = Callable[[str], Awaitable[object]]
"""Speaks a text that belongs to no turn (``TurnController.announce``)."""


def alarm_text(timer: Timer) -> str:
    return f"Your {timer.label} timer is done."


def missed_text(timer: Timer) -> str:
    return f"Your {timer.label} timer ended while I was off."


@dataclass
class Ringing:
    """A timer that has ended and is ringing."""

    timer: Timer
    since: float
    """When it began ringing (epoch seconds)."""
    next_at: float
    """When its alarm is said again."""


class TimerKeeper:
    """The timers of one daemon, their file, and their alarms."""

    def __init__(
        self,
        path: Path | None,
        *,
        alarm_limit_s: float = 60.0,
        repeat_s: float = 5.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        """``path``: the timers file (None: not kept); ``repeat_s``: from one alarm's start to the
        next; ``now``: the wall clock, seconds since the epoch (only ``run`` reads it)."""
        self.path = path
        self.alarm_limit_s = alarm_limit_s
        self.repeat_s = repeat_s
        self.now = now
        self.timers = Timers()
        self.ringing: list[Ringing] = []
        self.missed: list[Timer] = []
        """Timers that ended while the daemon was down, to be said once."""
        self.alarms_said = 0
        self._dirty = False
        self._loaded = False
        self._wake = asyncio.Event()
        self._writing: asyncio.Future[None] | None = None

    # -- what handlers do (on the loop) -----------------------------------------------------

    def load(self, now: float) -> None:
        """Read the timers file (blocking: call it in a thread, before the pipeline runs); timers
        that ended before ``now`` are kept aside to be said once. Read once per keeper."""
        if self.path is None or self._loaded:
            return
        self._loaded = True
        timers = load_timers(self.path)
        self.missed = timers.due(now)
        for timer in self.missed:
            _LOGGER.info("timers: the %s timer ended while the assistant was not running", timer.label)
        for timer in self.timers.running():  # started before the file was read
            timers.start(timer.started_at, timer.seconds, timer.name)
        self._dirty = bool(self.missed) or bool(len(self.timers))
        self.timers = timers
        if len(timers):
            _LOGGER.info("timers: %d running again from %s", len(timers), self.path)

    def start(self, now: float, seconds: float, name: str = "") -> Timer:
        timer = self.timers.start(now, seconds, name)
        _LOGGER.info("timers: %s timer started (%d running)", timer.label, len(self.timers))
        self._changed()
        return timer

    def cancel(self, ids: Iterable[int]) -> list[Timer]:
        gone = self.timers.remove(ids)
        if gone:
            self._changed()
        return gone

    def silence(self) -> int:
        """Stop every ringing alarm; returns how many rang."""
        count = len(self.ringing)
        self.ringing.clear()
        self.missed.clear()
        if count:
            _LOGGER.info("timers: %d alarm(s) silenced", count)
            self._wake.set()
        return count

    def _changed(self) -> None:
        self._dirty = True
        self._wake.set()

    # -- the clock-free logic ---------------------------------------------------------------

    def step(self, now: float) -> list[str]:
        """What to say at ``now``: timers that just ended begin ringing; a ringing alarm is said
        again every ``repeat_s`` until ``alarm_limit_s`` from its start."""
        texts = [missed_text(t) for t in self.missed]
        self.missed = []
        for timer in self.timers.due(now):
            self._dirty = True
            self.ringing.append(Ringing(timer, now, now))
        for ring in list(self.ringing):
            if now - ring.since >= self.alarm_limit_s:
                self.ringing.remove(ring)
                _LOGGER.info("timers: the %s timer's alarm went unanswered", ring.timer.label)
            elif now >= ring.next_at:
                texts.append(alarm_text(ring.timer))
                ring.next_at = now + self.repeat_s
        self.alarms_said += len(texts)
        return texts

    def next_wake(self, now: float) -> float | None:
        """Seconds from ``now`` until ``step`` has something to do (None: nothing pending)."""
        times = [t for t in (self.timers.next_end(),) if t is not None]
        for ring in self.ringing:
            times += [ring.next_at, ring.since + self.alarm_limit_s]
        return max(0.0, min(times) - now) if times else None

    # -- the task ---------------------------------------------------------------------------

    async def run(self, announce: Announce | None) -> None:
        """Ring timers as they end, until cancelled; the file is written after every change."""
        try:
            while True:
                self._wake.clear()
                texts = self.step(self.now())
                if self._dirty:
                    await self._save()
                for text in texts:
                    await self._say(announce, text)
                wait = self.next_wake(self.now())
                wait = MAX_SLEEP_S if wait is None else min(wait, MAX_SLEEP_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
        finally:  # the daemon stops: a timer just started must not be lost
            if self._writing is not None and not self._writing.done():
                await asyncio.wait([self._writing])
            if self._dirty:
                self._write(self._snapshot())

    async def _say(self, announce: Announce | None, text: str) -> None:
        _LOGGER.info("timers: %s", text)
        if announce is None:
            return
        try:
            await announce(text)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # an alarm that cannot be spoken is logged; timers go on
            _LOGGER.warning("timers: the alarm could not be spoken: %r", err)

    def _snapshot(self) -> Timers:
        self._dirty = False
        return Timers(self.timers.running(), self.timers.next_id)

    async def _save(self) -> None:
        self._writing = asyncio.ensure_future(asyncio.to_thread(self._write, self._snapshot()))
        await asyncio.shield(self._writing)

    def _write(self, timers: Timers) -> None:
        if self.path is None:
            return
        try:
            save_timers(self.path, timers)
        except OSError as err:
            _LOGGER.error("timers: cannot write %s: %s", self.path, err)
