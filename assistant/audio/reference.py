"""The echo canceller's far end: what the speaker played, at 16 kHz, on the monotonic clock.

A live sink (``playback.Playout``) hands its device one block at a time and knows when each
block will be heard: ``time.monotonic_ns()`` at the hand-over plus the device's latency (pacat's
``latency_ms``, PortAudio's DAC time). Once a stage asks for the played audio
(``LiveSink.played``), the sink keeps a 16 kHz copy of its queue (``To16k``, soxr, run where
audio is queued, not in the device callback) and writes each block's copy
into ``PlayedAudio`` at the time it is heard: a ring indexed by absolute time (one slot per
16 kHz sample of the monotonic clock). A reader asks for ``count`` samples from a time and gets
what was heard then, silence where nothing was (before the first block, in a gap, past the newest
block, or older than the ring keeps). Pure data: the caller passes every time.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
import numpy.typing as npt

from assistant.messages import SAMPLE_RATE

KEEP_MS = 3000
"""How much played audio the ring keeps, in ms (the echo canceller asks for the last few hundred)."""


def sample_index(ns: int) -> int:
    """The 16 kHz sample slot of a ``monotonic_ns`` time."""
    return ns * SAMPLE_RATE // 1_000_000_000


class PlayedAudio:
    """A thread-safe ring of the 16 kHz int16 audio heard, by time (``write`` from the device side)."""

    def __init__(self, keep_ms: int = KEEP_MS, snap_ms: int = 30) -> None:
        """``snap_ms``: a block that starts this close to where the one before it ended follows
        it directly (a device takes its blocks back to back; the times a sink reports for them
        wobble with its loop)."""
        self.size = SAMPLE_RATE * keep_ms // 1000
        self.snap = SAMPLE_RATE * snap_ms // 1000
        self.resyncs = 0
        """Blocks that started too far from where the one before ended to follow it."""
        self._ring = np.zeros(self.size, dtype=np.int16)
        self._end: int | None = None
        """Slot after the newest sample filed, forecast included (None: nothing yet)."""
        self._block_end: int | None = None
        """Slot after the last block handed to the device (the next one follows it)."""
        self._forecast = 0
        self._lock = threading.Lock()

    def write(
        self, start_ns: int, samples: npt.NDArray[np.int16], ahead: npt.NDArray[np.int16] | None = None
    ) -> None:
        """``samples`` are heard from ``start_ns`` on (a block may overlap the one before it: the
        newer wins; a gap since the last block is silence). ``ahead``: what is queued to follow
        the block, filed after it as a forecast (the device plays its blocks back to back); the
        blocks handed over later overwrite it with what was really played (silence after an
        interrupt or a pause)."""
        if not samples.size:
            return
        start = sample_index(start_ns)
        if len(samples) > self.size:  # only the newest part fits
            start += len(samples) - self.size
            samples = samples[-self.size :]
        with self._lock:
            last = self._block_end
            if last is not None and abs(start - last) <= self.snap:
                start = last
            elif last is not None:
                self.resyncs += 1
            if self._end is not None and self._end < start:
                self._put(self._end, np.zeros(min(start - self._end, self.size), dtype=np.int16))
            self._put(start, samples)
            end = self._block_end = start + len(samples)
            if ahead is not None and ahead.size:
                ahead = ahead[: self.size // 2]
                self._put(end, ahead)
                self._forecast = end + len(ahead)
            else:
                self._forecast = end
            self._end = self._forecast  # an older forecast past it no longer holds

    @property
    def filed_ns(self) -> int:
        """Up to when audio (heard, or forecast) is filed, in ``monotonic_ns`` (0: nothing yet)."""
        return 0 if self._end is None else self._end * 1_000_000_000 // SAMPLE_RATE

    def _put(self, start: int, samples: npt.NDArray[np.int16]) -> None:
        self._ring[np.arange(start, start + len(samples)) % self.size] = samples

    def read(self, start_ns: int, count: int) -> npt.NDArray[np.int16]:
        """``count`` samples heard from ``start_ns`` on; silence where nothing was kept."""
        out = np.zeros(count, dtype=np.int16)
        start = sample_index(start_ns)
        with self._lock:
            if self._end is None:
                return out
            lo = max(start, self._end - self.size)
            hi = min(start + count, self._end)
            if hi > lo:
                out[lo - start : hi - start] = self._ring[np.arange(lo, hi) % self.size]
        return out


class To16k:
    """The sink's rate to 16 kHz, one queued piece at a time (int16).

    Each piece is resampled whole (soxr, no state between pieces): a streaming resampler holds
    back its last ~30 ms until more audio comes, so when the queue ran dry between two pieces of
    a reply, the next piece's copy would start with the last one's tail and lag its audio by
    that much, and the canceller would have to find the delay again at every piece."""

    def __init__(self, rate: int) -> None:
        self.rate = rate

    def convert(self, pcm: bytes) -> npt.NDArray[np.int16]:
        samples = np.frombuffer(pcm, dtype="<i2")
        if self.rate == SAMPLE_RATE or not samples.size:
            return samples.astype(np.int16)
        import soxr

        out = soxr.resample(samples, self.rate, SAMPLE_RATE)
        return np.asarray(out, dtype=np.int16)

    def reset(self) -> None:
        """Nothing is held between pieces."""


class CaptureClock:
    """When each microphone sample was captured, on the monotonic clock, from when pieces arrived.

    A piece's ``arrived_ns`` is late by a varying amount (the device hands audio over in bursts,
    the loop is busy), never early. So ``origin`` (the time of the timeline's position 0) is the
    smallest ``arrived_ns - end position`` of the pieces of the last ``window_ms``: the least
    delayed piece. The window lets it follow the drift between the device's clock and the
    monotonic clock (a slow device makes pieces arrive ever later). It moves only by more than
    ``step_ms`` at a time, so the far end it selects stays one continuous stream (a jump skips
    or repeats that much of it; AEC3 then finds the delay again).
    """

    def __init__(self, window_ms: int = 60_000, step_ms: float = 10.0) -> None:
        self.window_ms = window_ms
        self.step_ns = int(step_ms * 1_000_000)
        self.origin_ns: int | None = None
        self.jumps = 0
        """Times the origin moved (beyond the first piece)."""
        self._recent: deque[tuple[float, int]] = deque()
        """(end position in ms, candidate origin) with increasing candidates: a monotone queue."""

    def at(self, position_ms: float) -> int:
        """The ``monotonic_ns`` time of a timeline position (``observe`` a piece first)."""
        assert self.origin_ns is not None, "observe a piece first"
        return self.origin_ns + int(position_ms * 1_000_000)

    def observe(self, end_ms: float, arrived_ns: int) -> None:
        """A piece ending at timeline position ``end_ms`` arrived at ``arrived_ns``."""
        candidate = arrived_ns - int(end_ms * 1_000_000)
        recent = self._recent
        while recent and recent[-1][1] >= candidate:
            recent.pop()
        recent.append((end_ms, candidate))
        while recent[0][0] < end_ms - self.window_ms:
            recent.popleft()
        best = recent[0][1]
        if self.origin_ns is None:
            self.origin_ns = best
        elif abs(best - self.origin_ns) > self.step_ns:
            self.origin_ns = best
            self.jumps += 1
