"""The parts every live device backend shares: ring buffer, format conversion, retry delays.

- ``ByteRing``: the bounded buffer between a device thread and the event loop. Writing never
  blocks; when it is full the *oldest* audio is dropped and counted.
- ``Converter``: device format (any rate, channels, int16/float32) to 16 kHz mono int16, with
  soxr's streaming resampler (never ``audioop``).
- ``Backoff``: capped exponential retry delays.
- ``DeviceLost``: how a device session tells its retry loop that the device is gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from assistant.audio.convert import float_to_pcm16, to_mono_float
from assistant.messages import SAMPLE_RATE

StateCallback = Callable[[str], None]
"""Receives ``waiting_for_device``, then ``listening`` (source) or ``ready`` (sink) on recovery."""


class DeviceLost(Exception):  # noqa: N818 - a signal between a session and its retry loop
    """A device session ended: the device is gone, refused to open, or stalled."""


@dataclass
class Backoff:
    """Capped exponential delays between device retries, in seconds."""

    initial_s: float = 0.25
    factor: float = 2.0
    max_s: float = 5.0
    attempts: int = 0
    """Sessions opened so far (each retry counts)."""
    _next_s: float = field(default=0.0, init=False)

    def next(self) -> float:
        """The delay before the next attempt, growing up to ``max_s``."""
        self._next_s = self.initial_s if self._next_s == 0 else min(self.max_s, self._next_s * self.factor)
        return self._next_s

    def reset(self) -> None:
        """The device works again: the next failure waits ``initial_s``."""
        self._next_s = 0.0


class ByteRing:
    """A bounded, thread-safe FIFO of audio bytes; ``write`` never blocks and drops the oldest."""

    def __init__(self, capacity: int, frame: int = 2) -> None:
        self.frame = frame
        self.capacity = max(frame, capacity - capacity % frame)
        self._buf = bytearray()
        self._lock = threading.Lock()
        self.overflows = 0
        """Writes that found the ring full (each dropped the oldest audio)."""
        self.dropped_bytes = 0
        self.last_write_ns = 0
        """``time.monotonic_ns()`` of the last write (a stalled device stops moving it)."""

    def write(self, data: bytes) -> None:
        with self._lock:
            self._buf += data
            excess = len(self._buf) - self.capacity
            if excess > 0:
                excess += -excess % self.frame
                del self._buf[:excess]
                self.overflows += 1
                self.dropped_bytes += excess
            self.last_write_ns = time.monotonic_ns()

    def read_all(self) -> bytes:
        with self._lock:
            data = bytes(self._buf)
            self._buf.clear()
            return data

    def clear(self) -> None:
        with self._lock:
            self._buf.clear()

    def __len__(self) -> int:
        return len(self._buf)


class Converter:
    """Device audio (interleaved int16 or float32 at ``rate``) to 16 kHz mono int16, streaming."""

    def __init__(self, rate: int, channels: int = 1, dtype: str = "int16", target: int = SAMPLE_RATE) -> None:
        self.rate, self.channels, self.dtype = rate, channels, np.dtype(dtype)
        self.frame = channels * self.dtype.itemsize
        self._leftover = b""
        self._stream = None
        if rate != target:
            import soxr

            self._stream = soxr.ResampleStream(rate, target, 1, dtype="float32")

    @property
    def identity(self) -> bool:
        return self._stream is None and self.channels == 1 and self.dtype == np.dtype("<i2")

    def convert(self, data: bytes) -> bytes:
        """Whole frames of ``data`` (a partial frame waits for the next call) as 16 kHz int16."""
        data = self._leftover + data
        usable = len(data) - len(data) % self.frame
        self._leftover = data[usable:]
        if self.identity:
            return data[:usable]
        samples = np.frombuffer(data[:usable], dtype=self.dtype).reshape(-1, self.channels)
        mono = to_mono_float(samples)
        if self._stream is not None:
            mono = np.asarray(self._stream.resample_chunk(mono), dtype=np.float32)
        return float_to_pcm16(mono) if mono.size else b""
