"""The echo gate's second judge: is a microphone frame the playback's echo, by its waveform?

Level alone cannot hear a user who is no louder than the echo (a loud speaker near the
microphone: 0 dB echo, where the user's voice over the reply is about 3 dB over the echo, under
the gate's margin). Where the speaker reports *what* it played (``played(start_ns, count)``, the
echo canceller's far end), a frame's *likeness* is its largest normalized cross-correlation with
the playback from ``hold_ms`` before its arrival to ``ahead_ms`` after (the sink's clock may place
a sample a little after the microphone heard it). The echo is the playback delayed and filtered,
so its frames are like it: on the virtual devices' 0 dB loopback 0.99-1.0 at the median and
0.78-0.92 at the 10th percentile, where the user talking over it gives 0.15-0.8 (mostly 0.3-0.65).

``EchoWaveform`` learns, from the frames the gate calls echo, their likeness, and from those at
least ``aligned`` like it where in the playback the echo lies (``lag_ns``: where the best match
ends, from the frame's arrival; -10 to +21 ms on the virtual devices). A frame less like the
playback than ``margin`` under the echo's ``percentile`` (``floor``) is not (only) the echo.
Where the echo is not like its playback (a reverberant room, a distorting speaker: the
percentile under ``minimum``), or until ``frames`` frames are learnt, there is no floor and the
level alone judges. ``echo_now`` is the playback at the echo's place: silence once the speaker
has paused, while the loudest playback of the gate's hold still stands. The correlation costs
about 0.43 ms of CPU per 30 ms frame while the speaker plays, on the event loop (the VAD stage's
CPU while the speaker plays, with the captured frames' VADs: 1.35 s per minute against 0.24 s
with the level alone). Pure: the playback comes through a callable, every time from the caller.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from assistant.messages import SAMPLE_RATE

NS_PER_S = 1_000_000_000


def frame_rms(pcm: bytes) -> float:
    """RMS of int16 samples, as a fraction of full scale (0..1)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    return float(np.sqrt(np.mean(samples * samples)) / 32768.0) if samples.size else 0.0


def loudest_10ms(pcm: bytes) -> float:
    """The largest RMS (0..1) of the int16 ``pcm``'s 10 ms blocks (0.0 for none)."""
    block = SAMPLE_RATE // 100 * 2
    return max((frame_rms(pcm[i : i + block]) for i in range(0, len(pcm), block)), default=0.0)


def likeness(frame: bytes, reference: bytes) -> tuple[float, int]:
    """How like a stretch of the int16 ``reference`` the int16 ``frame`` is: the largest
    normalized cross-correlation (0..1, sign ignored) with any same-length stretch, and where
    that stretch starts (samples). 1.0 where the frame is a scaled copy of one; 0.0 where either
    is silent or the reference is shorter than the frame."""
    f = np.frombuffer(frame, dtype="<i2").astype(np.float64)
    r = np.frombuffer(reference, dtype="<i2").astype(np.float64)
    n = f.size
    energy = float(np.dot(f, f))
    if not n or r.size < n or energy <= 0.0:
        return 0.0, 0
    size = 1 << int(np.ceil(np.log2(r.size + n)))
    dots = np.fft.irfft(np.fft.rfft(r, size) * np.conj(np.fft.rfft(f, size)), size)[: r.size - n + 1]
    sums = np.concatenate(([0.0], np.cumsum(r * r)))
    norms = np.sqrt(np.maximum(sums[n:] - sums[:-n], 0.0) * energy)
    scores = np.where(norms > 1e-6 * energy, np.abs(dots) / np.maximum(norms, 1e-12), 0.0)
    best = int(np.argmax(scores))
    return float(min(1.0, scores[best])), best


def _samples(ns: int) -> int:
    return ns * SAMPLE_RATE // NS_PER_S


def _duration_ns(pcm: bytes) -> int:
    return len(pcm) // 2 * NS_PER_S // SAMPLE_RATE


class EchoWaveform:
    """The echo's likeness to the playback and its place in it, learnt from the echo's frames."""

    def __init__(
        self,
        played: Callable[[int, int], bytes],
        *,
        hold_ms: int = 300,
        ahead_ms: int = 100,
        margin: float = 0.15,
        percentile: float = 25.0,
        minimum: float = 0.5,
        aligned: float = 0.9,
        frames: int = 10,
        keep: int = 200,
        slack_ms: int = 20,
    ) -> None:
        """``played(start_ns, count)``: the 16 kHz samples heard from ``start_ns`` on;
        ``keep``: how many of the echo's frames' likenesses are kept (a quarter as many lags)."""
        self.played = played
        self._hold_ns = hold_ms * 1_000_000
        self._ahead_ns = ahead_ms * 1_000_000
        self._slack_ns = slack_ms * 1_000_000
        self._margin, self._percentile, self._minimum = margin, percentile, minimum
        self._aligned, self._frames = aligned, frames
        self._likenesses: deque[float] = deque(maxlen=keep)
        self._lags: deque[int] = deque(maxlen=keep // 4)
        """Where the echo's best matches lay (ns after the frame's arrival; negative: before)."""

    def match(self, pcm: bytes, at_ns: int) -> tuple[float, int]:
        """How like the playback around its arrival at ``at_ns`` the frame is, and where the best
        match ended (ns after the arrival)."""
        start_ns = at_ns - self._hold_ns - _duration_ns(pcm)
        count = len(pcm) // 2 + _samples(self._hold_ns + self._ahead_ns)
        value, offset = likeness(pcm, self.played(start_ns, count))
        return value, start_ns + _duration_ns(pcm) + offset * NS_PER_S // SAMPLE_RATE - at_ns

    def learn(self, match: tuple[float, int]) -> None:
        """An echo frame's ``match``."""
        self._likenesses.append(match[0])
        if match[0] >= self._aligned:
            self._lags.append(match[1])

    @property
    def floor(self) -> float | None:
        """Under this likeness a frame is not the echo alone (None: level alone judges)."""
        if len(self._likenesses) < self._frames:
            return None
        typical = float(np.percentile(self._likenesses, self._percentile))
        return typical - self._margin if typical >= self._minimum else None

    @property
    def lag_ns(self) -> int | None:
        """Where the echo lies in the playback, from a frame's arrival (the median of the best
        matches of the echo's frames at least ``aligned`` like it; None: too few)."""
        return int(np.median(self._lags)) if len(self._lags) >= self._frames else None

    def echo_now(self, pcm: bytes, at_ns: int, lag_ns: int) -> float:
        """The loudest 10 ms of the playback at the echo's place for the frame that arrived at
        ``at_ns``, give or take ``slack_ms`` (0 when the speaker had fallen silent there)."""
        start_ns = at_ns + lag_ns - _duration_ns(pcm) - self._slack_ns
        count = _samples(_duration_ns(pcm) + 2 * self._slack_ns)
        return loudest_10ms(self.played(start_ns, count))
