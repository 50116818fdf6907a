"""The input stream's own timeline.

Every latency mark is kept twice: as ``time.monotonic_ns()`` and as a position on the input
audio's timeline, in ms ("where in the input stream the pipeline was when it happened"), so a
test can compare a mark against the known end of speech in a file.

While the source is paced in real time, position and wall time advance together. When it is
not paced (``realtime=False``), position is the amount of audio fed so far; after the input has
ended, wall time moves the timeline on, as silence would.
"""

from __future__ import annotations

import time


class StreamClock:
    """Maps the monotonic clock to input-timeline milliseconds."""

    def __init__(self, *, realtime: bool) -> None:
        self.realtime = realtime
        self._origin_ns: int | None = None
        self._fed_ms = 0.0
        self._ended_ns: int | None = None
        self.ticks = 0
        """Counts the source's progress (audio handed on, or an idle source's heartbeat); a
        service watchdog pings only while this moves, so a stalled pipeline is noticed."""

    def start(self, now_ns: int | None = None) -> None:
        """Mark the moment the first input sample arrives (position 0)."""
        self._origin_ns = time.monotonic_ns() if now_ns is None else now_ns

    def fed(self, position_ms: float) -> None:
        """The source has handed on audio up to ``position_ms``."""
        self._fed_ms = position_ms
        self.ticks += 1

    def ended(self, now_ns: int | None = None) -> None:
        """The input has ended; from here on the timeline follows wall time."""
        self._ended_ns = time.monotonic_ns() if now_ns is None else now_ns

    def position_ms(self, now_ns: int | None = None) -> float:
        """Input-timeline position of ``now_ns`` (default: now), in ms."""
        if self._origin_ns is None:
            return 0.0
        now = time.monotonic_ns() if now_ns is None else now_ns
        if self.realtime:
            return (now - self._origin_ns) / 1e6
        if self._ended_ns is not None:
            return self._fed_ms + max(0, now - self._ended_ns) / 1e6
        return self._fed_ms
