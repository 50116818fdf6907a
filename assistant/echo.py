"""Keeping the assistant's own voice from triggering barge-in.

While the speaker plays, a microphone frame counts as the user's speech only if a stricter VAD
calls it speech *and* it is louder than the assistant's own voice coming back, by a margin.
The sink reports how loud it is playing right now (``playback_level()``, RMS 0..1); the echo
reaches the microphone a little later and smeared, so the gate compares against the loudest
level of the last ``hold_frames`` frames. Pure: the level is passed in through a callable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np


def frame_rms(pcm: bytes) -> float:
    """RMS of int16 samples, as a fraction of full scale (0..1)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    return float(np.sqrt(np.mean(samples * samples)) / 32768.0) if samples.size else 0.0


class EchoGate:
    """Decides, frame by frame, whether voiced audio during playback is the user or the echo."""

    def __init__(self, level: Callable[[], float], *, margin_db: float = 6.0, hold_frames: int = 10) -> None:
        self.level = level
        self.factor = 10 ** (margin_db / 20)
        """How much louder than the echo estimate the user must be (amplitude ratio)."""
        self._recent: deque[float] = deque(maxlen=hold_frames)
        self.gated = 0
        """Voiced frames dismissed as the assistant's own voice."""

    def playing(self) -> bool:
        """True while the speaker plays (or played within the hold window)."""
        self._recent.append(max(0.0, float(self.level())))
        return max(self._recent) > 0.0

    def allow(self, pcm: bytes, strict_voiced: bool) -> bool:
        """Call after ``playing()`` returned True: is this voiced frame the user's?"""
        echo = max(self._recent, default=0.0)
        if strict_voiced and frame_rms(pcm) > echo * self.factor:
            return True
        self.gated += 1
        return False
