"""Audio sinks: a WAV file or raw PCM on stdout.

A sink takes mono int16 audio at the voice's rate. File writes are small and fast, so they run
on the loop; the speaker backends implement the same methods and may await the device. Every
sink has a ``volume`` (``contracts.Volume``): a gain applied to what is written (``with_gain``).
"""

from __future__ import annotations

import sys
import wave
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from assistant.audio.convert import float_to_pcm16, pcm16_to_float, resample


def with_gain(pcm: bytes, volume: float) -> bytes:
    """int16 samples scaled by ``volume`` (0.0 silent .. 1.0 unchanged, the same bytes)."""
    if volume >= 1.0:
        return pcm
    if volume <= 0.0:
        return bytes(len(pcm))
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * np.float32(volume)
    return np.round(samples).astype("<i2").tobytes()


class AudioSink(Protocol):
    """Where the assistant's speech goes."""

    async def write(self, pcm: bytes, sample_rate: int) -> None: ...

    async def turn_done(self) -> None:
        """The current turn's reply is complete."""

    async def close(self) -> None: ...


class _RateLock:
    """Keeps one sample rate per output: the first audio's; later audio is resampled to it."""

    def __init__(self, default_rate: int) -> None:
        self.rate: int | None = None
        self.default_rate = default_rate

    def convert(self, pcm: bytes, sample_rate: int) -> bytes:
        if self.rate is None:
            self.rate = sample_rate
        if sample_rate == self.rate:
            return pcm
        return float_to_pcm16(resample(pcm16_to_float(pcm), sample_rate, self.rate))


class WavSink:
    """Writes every reply into one WAV file, ``gap_ms`` of silence between turns."""

    def __init__(self, path: str | Path, *, gap_ms: int = 300, default_rate: int = 22_050) -> None:
        self.path = Path(path)
        self.gap_ms = gap_ms
        self._rate = _RateLock(default_rate)
        self._wav: wave.Wave_write | None = None
        self._turns_written = 0
        self._turn_has_audio = False
        self.samples_written = 0
        self.volume = 1.0
        """Gain on what is written, 0.0 to 1.0 ("volume down")."""

    def _open(self, rate: int) -> wave.Wave_write:
        if self._wav is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            wav = wave.open(str(self.path), "wb")  # noqa: SIM115 - closed in close()
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(rate)
            self._wav = wav
        return self._wav

    async def write(self, pcm: bytes, sample_rate: int) -> None:
        pcm = with_gain(self._rate.convert(pcm, sample_rate), self.volume)
        rate = self._rate.rate or sample_rate
        wav = self._open(rate)
        if not self._turn_has_audio and self._turns_written and self.gap_ms:
            wav.writeframes(bytes(2 * (rate * self.gap_ms // 1000)))
        self._turn_has_audio = True
        wav.writeframes(pcm)
        self.samples_written += len(pcm) // 2

    async def turn_done(self) -> None:
        if self._turn_has_audio:
            self._turns_written += 1
        self._turn_has_audio = False

    async def close(self) -> None:
        wav = self._open(self._rate.rate or self._rate.default_rate)
        wav.close()


class RawSink:
    """Raw signed 16-bit little-endian mono PCM to a byte stream (stdout by default)."""

    def __init__(self, stream: BinaryIO | None = None, *, default_rate: int = 22_050) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer
        self._rate = _RateLock(default_rate)
        self.volume = 1.0
        """Gain on what is written, 0.0 to 1.0."""

    @property
    def rate(self) -> int | None:
        return self._rate.rate

    async def write(self, pcm: bytes, sample_rate: int) -> None:
        self.stream.write(with_gain(self._rate.convert(pcm, sample_rate), self.volume))
        self.stream.flush()

    async def turn_done(self) -> None:
        return None

    async def close(self) -> None:
        self.stream.flush()


class NullSink:
    """Discards audio (an MQTT daemon that publishes text and has no speaker)."""

    volume = 1.0

    async def write(self, pcm: bytes, sample_rate: int) -> None:
        return None

    async def turn_done(self) -> None:
        return None

    async def close(self) -> None:
        return None


class MemorySink:
    """Keeps everything in memory, per turn; for tests and the benchmark."""

    def __init__(self) -> None:
        self.turns: list[bytes] = []
        self.rate: int | None = None
        self._current: list[bytes] = []
        self.volume = 1.0
        """Gain on what is kept, 0.0 to 1.0."""

    async def write(self, pcm: bytes, sample_rate: int) -> None:
        self.rate = sample_rate
        self._current.append(with_gain(pcm, self.volume))

    async def turn_done(self) -> None:
        if self._current:
            self.turns.append(b"".join(self._current))
        self._current = []

    async def close(self) -> None:
        await self.turn_done()

    def samples(self) -> np.ndarray:
        return np.frombuffer(b"".join(self.turns), dtype="<i2")
