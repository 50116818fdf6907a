"""Audio helpers: silence trimming."""

from __future__ import annotations

import numpy as np

from assistant.audio.convert import trim_silence


def test_trim_silence_keeps_the_sound_and_a_margin() -> None:
    rate = 1000
    tone = (8000 * np.sin(np.arange(300) / 3)).astype(np.int16)
    hiss = np.full(200, 30, dtype=np.int16)  # below 2% of the peak
    pcm = np.concatenate([np.zeros(500, np.int16), tone, hiss, np.zeros(400, np.int16)]).tobytes()
    trimmed = np.frombuffer(trim_silence(pcm, rate, keep_ms=40), dtype=np.int16)
    loud = np.flatnonzero(np.abs(tone) > 160)
    assert trimmed.size == loud[-1] - loud[0] + 1 + 2 * 40
    assert np.array_equal(trimmed[40 : 40 + loud[-1] - loud[0] + 1], tone[loud[0] : loud[-1] + 1])


def test_trim_silence_leaves_silence_and_empty_audio_alone() -> None:
    quiet = bytes(200)
    assert trim_silence(quiet, 1000) == quiet
    assert trim_silence(b"", 1000) == b""
