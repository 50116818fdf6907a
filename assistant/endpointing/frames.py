"""Audio frames for webrtcvad: ``Framer`` re-chunks pieces of any length into whole ``frame_ms``
frames (webrtcvad takes only 10, 20 or 30 ms of 16 kHz mono int16); ``HighPass`` is the filter in
front of webrtcvad against mains hum (see ``stages/vad.py``)."""

from __future__ import annotations

import numpy as np

from assistant.messages import SAMPLE_RATE


class Framer:
    """Re-chunks arbitrary byte pieces into whole frames of ``frame_ms`` at 16 kHz int16 mono."""

    def __init__(self, frame_ms: int) -> None:
        self.frame_bytes = 2 * SAMPLE_RATE * frame_ms // 1000
        """Bytes per frame."""
        self._pending = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back until the next piece completes a frame (possibly an odd count)."""
        return len(self._pending)

    def push(self, pcm: bytes) -> list[bytes]:
        """Add a piece; return every frame now complete, oldest first."""
        self._pending += pcm
        whole = len(self._pending) - len(self._pending) % self.frame_bytes
        if whole == 0:
            return []
        chunk = bytes(self._pending[:whole])
        del self._pending[:whole]
        size = self.frame_bytes
        return [chunk[i : i + size] for i in range(0, whole, size)]

    def reset(self) -> None:
        """Forget the partial frame."""
        self._pending.clear()


BYTES_PER_MS = 2 * SAMPLE_RATE // 1000
"""Bytes of 16 kHz int16 mono audio per millisecond."""
HIGHPASS_HZ = 150.0
"""Default cut-off of the filter in front of webrtcvad, in Hz."""


class HighPass:
    """Streaming linear-phase FIR high-pass for 16 kHz int16 audio (numpy only, no per-sample loop)."""

    def __init__(self, cutoff_hz: float = HIGHPASS_HZ, taps: int = 257) -> None:
        n = np.arange(taps) - (taps - 1) / 2
        lowpass = np.sinc(2 * cutoff_hz / SAMPLE_RATE * n) * np.hamming(taps)
        self._taps = -lowpass / lowpass.sum()
        self._taps[(taps - 1) // 2] += 1.0
        self._history = np.zeros(taps - 1)
        self.delay_ms = (taps - 1) / 2 * 1000 / SAMPLE_RATE
        """Group delay of the filter, in ms."""

    def __call__(self, pcm: bytes) -> bytes:
        """Filter a whole number of samples, continuing from the previous call."""
        samples = np.concatenate([self._history, np.frombuffer(pcm, dtype="<i2")])
        self._history = samples[len(samples) - len(self._history) :]
        out = np.convolve(samples, self._taps, mode="valid")
        return np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes()
