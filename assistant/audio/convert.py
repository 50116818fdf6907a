"""Conversions to the pipeline's audio format: 16 kHz mono signed 16-bit (soxr resampling)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from assistant.errors import AudioError
from assistant.messages import SAMPLE_RATE


def to_mono_float(samples: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
    """Average channels; int samples scaled to [-1, 1]."""
    data = np.asarray(samples)
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        data = data.astype(np.float32) / float(max(abs(info.min), info.max))
    data = data.astype(np.float32, copy=False)
    if data.ndim == 2:
        data = data.mean(axis=1, dtype=np.float32)
    return data


def resample(
    samples: npt.NDArray[np.float32], rate: int, target: int = SAMPLE_RATE
) -> npt.NDArray[np.float32]:
    """High-quality resampling with soxr (a no-op at the target rate)."""
    if rate == target:
        return samples
    import soxr

    return np.asarray(soxr.resample(samples, rate, target), dtype=np.float32)


def float_to_pcm16(samples: npt.NDArray[np.float32]) -> bytes:
    """Float samples in [-1, 1] to int16 little-endian bytes (clipped)."""
    clipped = np.clip(samples, -1.0, 1.0) * 32767.0
    return clipped.astype("<i2").tobytes()


def pcm16_to_float(pcm: bytes) -> npt.NDArray[np.float32]:
    """int16 little-endian bytes to float samples in [-1, 1]."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def read_audio_file(path: str | Path) -> bytes:
    """Any common audio file (WAV of any rate, width, channels; FLAC; OGG) as 16 kHz mono int16."""
    import soundfile

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise AudioError(f"{path}: cannot read audio: {err}; give a WAV, FLAC or OGG file") from err
    except OSError as err:
        raise AudioError(f"{path}: cannot open: {err}") from err
    return float_to_pcm16(resample(to_mono_float(data), int(rate)))


def trim_silence(pcm: bytes, sample_rate: int, *, keep_ms: int = 40, floor: float = 0.02) -> bytes:
    """``pcm`` (int16) without its leading and trailing silence, keeping ``keep_ms`` at each end.

    Silence is what stays below ``floor`` times the peak; all-silent audio is returned as it is.
    """
    samples = np.frombuffer(pcm, dtype=np.int16)
    if not samples.size:
        return pcm
    level = np.abs(samples.astype(np.int32))
    loud = np.flatnonzero(level > floor * level.max())
    if not loud.size or level.max() == 0:
        return pcm
    keep = sample_rate * keep_ms // 1000
    start, end = max(0, int(loud[0]) - keep), min(samples.size, int(loud[-1]) + 1 + keep)
    return samples[start:end].tobytes()
