"""Where speech truly ends, finer than the VAD's frames: a 10 ms energy envelope.

webrtcvad decides on 30 ms frames and keeps calling the decay of the last word (and, in noise,
a little more) speech, so the end of its last voiced frame falls some tens of ms after the
speaker stopped. The envelope keeps the level (dBFS, RMS) of every 10 ms block of a turn's audio;
``speech_end`` places the end of speech at the end of the last block, at or before the VAD's
end, that is still loud enough to be speech: within ``SPEECH_RANGE_DB`` of the turn's loudest
block and ``FLOOR_MARGIN_DB`` above the noise floor heard before the speech began.

The segmenter counts end-of-turn silence from that point, and the turn's latency budget starts
there. Audio that is not loud enough to judge (digital silence, or a level the floor swamps)
leaves the VAD's end as it is. In that silence, a frame webrtcvad calls speech resumes the turn
only if its mean power reaches the same level (``latest_loud``): a crowd's murmur at the noise's
level does not.

``FloorGate`` keeps webrtcvad from calling a steady noise speech: a frame must stand above the
noise floor of the last 1.5 s.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from assistant.messages import SAMPLE_RATE

BLOCK_MS = 10
"""Length of one envelope block, in ms."""
BLOCK_SAMPLES = SAMPLE_RATE * BLOCK_MS // 1000
SPEECH_RANGE_DB = 35.0
"""A block more than this below the turn's loudest block is not speech (the decay's tail)."""
FLOOR_MARGIN_DB = 6.0
"""A block less than this above the noise floor is not speech."""
FLOOR_PERCENTILE = 20.0
"""The noise floor is this percentile of the levels of the blocks before the speech began."""
MAX_LEAD_MS = 120
"""The fine end lies at most this far before the VAD's (about webrtcvad's longest overhang): a
quiet last sound that the envelope cannot tell from the noise does not pull it further back."""
SILENT_DB = -90.0
"""Level given to a block of digital silence."""


def block_levels(pcm: bytes, block_samples: int = BLOCK_SAMPLES) -> list[float]:
    """RMS level in dBFS of each whole block (10 ms by default) of 16 kHz int16 audio."""
    samples = np.frombuffer(pcm, dtype="<i2")
    whole = samples.size - samples.size % block_samples if block_samples else 0
    if whole == 0:
        return []
    blocks = samples[:whole].astype(np.float64).reshape(-1, block_samples) / 32768.0
    power = np.mean(np.square(blocks), axis=1)
    levels = 10.0 * np.log10(np.maximum(power, 10.0 ** (SILENT_DB / 10.0)))
    return [float(v) for v in levels]


class Envelope:
    """The 10 ms levels of one turn's audio, from the first sample the segmenter keeps."""

    def __init__(self) -> None:
        self.levels: list[float] = []
        self.start = 0
        """Input position (samples) of the first block."""

    def reset(self, pcm: bytes, start: int) -> None:
        """Start over with ``pcm`` (pre-roll and the first speech), which begins at sample ``start``."""
        self.levels = block_levels(pcm)
        self.start = start

    def push(self, pcm: bytes) -> None:
        """Add one frame (a whole number of blocks)."""
        self.levels += block_levels(pcm)

    def _blocks(self, speech_start: int, vad_end: int) -> tuple[int, int]:
        """Indices of the first block of the speech and of the block after ``vad_end``'s."""
        first = max(0, (speech_start - self.start) // BLOCK_SAMPLES)
        return first, min(len(self.levels), math.ceil((vad_end - self.start) / BLOCK_SAMPLES))

    def threshold(self, speech_start: int, vad_end: int) -> float | None:
        """The level (dBFS) a block of the speech up to ``vad_end`` must reach to be speech (see the
        module), or None when nothing can be judged."""
        first, last = self._blocks(speech_start, vad_end)
        speech = self.levels[first:last]
        if not speech:
            return None
        peak = max(speech)
        before = self.levels[:first]
        floor = float(np.percentile(before, FLOOR_PERCENTILE)) if before else SILENT_DB
        threshold = max(peak - SPEECH_RANGE_DB, floor + FLOOR_MARGIN_DB)
        if peak <= SILENT_DB or peak < threshold:
            return None
        return threshold

    def speech_end(self, speech_start: int, vad_end: int, threshold: float | None) -> int:
        """The end of speech in samples: the end of the last block up to ``vad_end`` that reaches
        ``threshold`` (``threshold()``'s), or ``vad_end`` when nothing can be judged (None)."""
        if threshold is None:
            return vad_end
        earliest = max(speech_start, vad_end - MAX_LEAD_MS * SAMPLE_RATE // 1000)
        first, last = self._blocks(speech_start, vad_end)
        for index in range(last - 1, first - 1, -1):
            if self.levels[index] >= threshold:
                return max(earliest, min(vad_end, self.start + (index + 1) * BLOCK_SAMPLES))
        return vad_end

    def latest_loud(self, samples: int, threshold: float) -> bool:
        """True if the latest ``samples`` (whole blocks) reach ``threshold`` on average power."""
        latest = self.levels[-max(1, samples // BLOCK_SAMPLES) :]
        power = sum(10.0 ** (level / 10.0) for level in latest) / max(1, len(latest))
        return 10.0 * math.log10(max(power, 10.0 ** (SILENT_DB / 10.0))) >= threshold


FLOOR_WINDOW_MS = 1500
"""The noise floor is the quietest frame of this much of the latest audio."""
FLOOR_GATE_DB = 6.0
"""A frame webrtcvad calls speech counts only this far above the noise floor."""


class FloorGate:
    """Steady noise is not speech, whatever webrtcvad says.

    webrtcvad takes a noise that starts out of silence (a fan, a hum switched on, a noisy room
    after a quiet one) for speech, and goes on doing so for seconds: its noise model learns only
    from frames it calls non-speech. The gate follows the noise floor, the quietest frame of the
    last ``FLOOR_WINDOW_MS``, and lets a voiced verdict stand only for a frame ``FLOOR_GATE_DB``
    above it. Speech has quieter moments within any 1.5 s, so the floor stays under it; a steady
    noise becomes its own floor within the window. In silence the floor is far down and every
    verdict stands, as without the gate."""

    def __init__(self, frame_ms: int) -> None:
        self._levels: deque[float] = deque(maxlen=max(1, FLOOR_WINDOW_MS // frame_ms))

    def loud(self, frame_pcm: bytes) -> bool:
        """Record one frame; True if it is far enough above the noise floor to be speech."""
        level = (block_levels(frame_pcm, len(frame_pcm) // 2) or [SILENT_DB])[0]
        self._levels.append(level)
        return level >= min(self._levels) + FLOOR_GATE_DB
