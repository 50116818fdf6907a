"""Audio as Wyoming carries it (``rate``, ``width``, ``channels`` with each chunk) to mono int16.

``PcmConverter`` turns a stream of chunks into mono signed 16-bit audio at one rate, resampling
with a streaming soxr resampler when the sender's rate differs (so chunk edges leave no clicks).
Only 16-bit samples are taken: Home Assistant, its satellites and the reference servers send
nothing else; anything else is ``audio_invalid``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from assistant.wyoming.protocol import EventError

MAX_RATE = 192_000
MAX_CHANNELS = 8


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """The format of a Wyoming audio stream."""

    rate: int
    """Hz."""
    width: int
    """Bytes per sample (only 2 is taken)."""
    channels: int


def audio_format(data: dict[str, Any], what: str = "audio") -> AudioFormat:
    """The format an ``audio-start``/``audio-chunk`` declares; ``EventError`` when it is unusable."""
    rate, width, channels = data.get("rate"), data.get("width"), data.get("channels")
    for key, value, hi in (
        ("rate", rate, MAX_RATE),
        ("width", width, 4),
        ("channels", channels, MAX_CHANNELS),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
            raise EventError(
                "bad_event", f"{what}: {key} is {value!r}: expected a whole number from 1 to {hi}"
            )
    assert isinstance(rate, int) and isinstance(width, int) and isinstance(channels, int)
    if width != 2:
        raise EventError(
            "audio_invalid", f"{what}: {width}-byte samples: only 16-bit (width 2) audio is taken"
        )
    return AudioFormat(rate, width, channels)


class PcmConverter:
    """Chunks of any rate and channel count in, mono int16 at ``rate`` out (streaming)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._stream: Any = None
        self._from = 0

    def convert(self, pcm: bytes, fmt: AudioFormat) -> bytes:
        """One chunk; a trailing partial frame is dropped."""
        frame = fmt.width * fmt.channels
        samples = np.frombuffer(pcm[: len(pcm) // frame * frame], dtype="<i2")
        if fmt.channels == 1 and fmt.rate == self.rate:
            return samples.tobytes()
        audio = samples.reshape(-1, fmt.channels).mean(axis=1, dtype=np.float32) / 32768.0
        if fmt.rate != self.rate:
            audio = self._resample(audio, fmt.rate)
        return _to_pcm(audio)

    def flush(self) -> bytes:
        """What the resampler still holds, at the end of a stream."""
        if self._stream is None:
            return b""
        tail = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream = None
        return _to_pcm(np.asarray(tail, dtype=np.float32))

    def _resample(self, audio: npt.NDArray[np.float32], rate: int) -> npt.NDArray[np.float32]:
        if self._stream is None or self._from != rate:
            import soxr

            self._stream, self._from = soxr.ResampleStream(rate, self.rate, 1, dtype="float32"), rate
        return np.asarray(self._stream.resample_chunk(audio), dtype=np.float32)


def _to_pcm(audio: npt.NDArray[np.float32]) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
