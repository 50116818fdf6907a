"""Audio sources: a file or a raw PCM stream on stdin, fed *as if it were a live microphone*.

A source puts ``AudioIn`` pieces (16 kHz mono int16) on its outbox, then ``EndOfStream``. Paced
sources sleep so audio arrives no faster than real time; after the input ends they append
``tail_silence_ms`` of silence, as a microphone would go on hearing the quiet room.
The microphone backends implement the same ``run(outbox, clock)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from assistant.audio.convert import float_to_pcm16, read_audio_file, to_mono_float
from assistant.clock import StreamClock
from assistant.config import InputConfig
from assistant.errors import AudioError
from assistant.messages import SAMPLE_RATE, AudioIn, EndOfStream, Message

BYTES_PER_MS = SAMPLE_RATE * 2 // 1000


class AudioSource(Protocol):
    """Anything that feeds the pipeline's first queue."""

    async def run(self, outbox: asyncio.Queue[Message], clock: StreamClock) -> None: ...


async def feed(
    pieces: AsyncIterator[bytes], outbox: asyncio.Queue[Message], clock: StreamClock, config: InputConfig
) -> None:
    """Cut pieces into ``chunk_ms`` AudioIn items, pace them, add the tail silence, end the stream."""
    chunk = config.chunk_ms * BYTES_PER_MS
    pending = b""
    position_ms = 0.0
    start_ns = time.monotonic_ns()
    clock.start(start_ns)

    async def put(pcm: bytes) -> None:
        nonlocal position_ms
        if config.realtime:
            due_ns = start_ns + int(position_ms * 1e6)
            delay = (due_ns - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
        await outbox.put(AudioIn(pcm, position_ms))
        position_ms += len(pcm) / BYTES_PER_MS
        clock.fed(position_ms)

    async for piece in pieces:
        data = pending + piece if pending else piece
        whole = len(data) - len(data) % chunk
        for at in range(0, whole, chunk):  # by offset: cutting the head off copies the rest
            await put(data[at : at + chunk])
        pending = data[whole:]
    if len(pending) >= 2:
        await put(pending[: len(pending) - len(pending) % 2])
    silence = bytes(chunk)
    for _ in range(config.tail_silence_ms // config.chunk_ms):
        await put(silence)
    clock.ended()
    await outbox.put(EndOfStream())


class PcmSource:
    """Audio already in memory (16 kHz mono int16), e.g. a decoded file."""

    def __init__(self, pcm: bytes, config: InputConfig) -> None:
        self.pcm = pcm
        self.config = config

    @classmethod
    def from_file(cls, path: str | Path, config: InputConfig) -> PcmSource:
        return cls(read_audio_file(path), config)

    async def run(self, outbox: asyncio.Queue[Message], clock: StreamClock) -> None:
        async def one() -> AsyncIterator[bytes]:
            yield self.pcm

        await feed(one(), outbox, clock, self.config)


class StreamSource:
    """Raw signed 16-bit little-endian PCM from a byte stream (stdin by default), any rate/channels."""

    def __init__(
        self,
        config: InputConfig,
        *,
        rate: int = SAMPLE_RATE,
        channels: int = 1,
        stream: BinaryIO | None = None,
        read_size: int = 4096,
    ) -> None:
        if rate < 4000 or rate > 192_000:
            raise AudioError(f"--input-rate {rate}: allowed 4000 to 192000 Hz")
        if channels < 1 or channels > 8:
            raise AudioError(f"--input-channels {channels}: allowed 1 to 8")
        self.config = config
        self.rate = rate
        self.channels = channels
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.read_size = read_size

    async def _reader(self) -> Callable[[int], Awaitable[bytes]]:
        """An async ``read(n)``: pipes, sockets and terminals through the event loop (so a stop
        signal is never stuck behind a blocked read in a worker thread); files and in-memory
        streams in a worker thread (their reads always return)."""
        try:
            fileno = self.stream.fileno()
            pipe_like = not stat.S_ISREG(os.fstat(fileno).st_mode)
        except (OSError, ValueError, io.UnsupportedOperation):
            pipe_like = False
        if pipe_like:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=1 << 20)
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), self.stream)
            return reader.read
        blocking = getattr(self.stream, "read1", self.stream.read)

        async def read(size: int) -> bytes:
            data: bytes = await asyncio.to_thread(blocking, size)
            return data

        return read

    async def _pieces(self) -> AsyncIterator[bytes]:
        frame = 2 * self.channels
        leftover = b""
        resampler = None
        if self.rate != SAMPLE_RATE:
            import soxr

            resampler = soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32")
        read = await self._reader()
        while True:
            data = await read(self.read_size)
            last = not data
            data = leftover + data
            usable = len(data) - len(data) % frame
            leftover = data[usable:]
            samples = np.frombuffer(data[:usable], dtype="<i2").reshape(-1, self.channels)
            mono = to_mono_float(samples)
            if resampler is not None:
                mono = np.asarray(resampler.resample_chunk(mono, last=last), dtype=np.float32)
            elif self.channels == 1:
                if usable:
                    yield data[:usable]
                if last:
                    return
                continue
            if mono.size:
                yield float_to_pcm16(mono)
            if last:
                return

    async def run(self, outbox: asyncio.Queue[Message], clock: StreamClock) -> None:
        await feed(self._pieces(), outbox, clock, self.config)


class IdleSource:
    """No audio at all (an MQTT-only daemon): ends the stream when ``stop()`` is called."""

    def __init__(self) -> None:
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, outbox: asyncio.Queue[Message], clock: StreamClock) -> None:
        clock.start()
        while not self._stop.is_set():
            clock.ticks += 1  # a heartbeat: the loop is alive
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)
        clock.ended()
        await outbox.put(EndOfStream())
