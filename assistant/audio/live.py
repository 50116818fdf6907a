"""What the live microphone and speaker backends share: ring buffer, resampling, device retries.

A backend (``pulse.py``: ``parec``/``pacat``; ``portaudio.py``: sounddevice) only opens one
*device session* at a time: ``LiveSource._session`` captures until the device fails,
``LiveSink._session`` plays until it fails. Everything else lives here:

- ``ByteRing``: the bounded buffer between a device thread and the event loop. Writing never
  blocks; when it is full the *oldest* audio is dropped and counted.
- ``Converter``: device format (any rate, channels, int16/float32) to 16 kHz mono int16, with
  soxr's streaming resampler (never ``audioop``).
- ``Backoff``: capped exponential retry delays.
- Device trouble: when a session fails (device missing at start, unplugged, server gone, no
  audio for ``stall_s``), the backend reports ``waiting_for_device`` through ``on_state``, waits
  ``Backoff.next()`` and opens a new session; when audio flows again it reports ``listening``
  (a source) or ``ready`` (a sink). The pipeline is never restarted.
- Timeline: a source's ``start_ms`` is continuous. While the device is away the source goes on
  feeding *silence, paced in real time*: lost time counts as silence, so ``start_ms`` keeps
  tracking wall time since ``run`` began, an utterance cut by the loss is endpointed, and the
  watchdog sees progress (the daemon is waiting, not stalled).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..clock import StreamClock
from ..errors import AssistantError
from ..messages import SAMPLE_RATE, AudioIn, EndOfStream, Message
from .convert import float_to_pcm16, to_mono_float

log = logging.getLogger(__name__)

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


class LiveSource:
    """Base of the live microphones: ``run(outbox, clock)`` until ``stop()``.

    Subclasses implement ``_session()``: open the device, call ``_begin(rate, channels, dtype)``,
    then ``_push(raw)`` each piece (from any thread) until the device fails (raise ``DeviceLost``)
    or the task is cancelled.
    """

    name = "live"

    def __init__(
        self,
        *,
        on_state: StateCallback | None = None,
        chunk_ms: int = 20,
        buffer_ms: int = 2000,
        backoff: Backoff | None = None,
        stall_s: float = 5.0,
    ) -> None:
        """``chunk_ms``: size of each AudioIn, in ms; ``buffer_ms``: device audio kept while the
        pipeline is slow, in ms (then the oldest is dropped); ``stall_s``: a device that delivers
        nothing for this many seconds is treated as lost."""
        self.on_state = on_state
        self.chunk_ms = chunk_ms
        self.buffer_ms = buffer_ms
        self.backoff = backoff or Backoff()
        self.stall_s = stall_s
        self.state = "starting"
        """``starting``, ``listening``, ``waiting_for_device`` or ``stopped``."""
        self.losses = 0
        """Device sessions that ended in trouble."""
        self.silence_ms = 0.0
        """Silence fed in place of a missing device, in ms."""
        self.last_error = ""
        self._ring = ByteRing(buffer_ms * SAMPLE_RATE * 2 // 1000)
        self._converter = Converter(SAMPLE_RATE)
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flagged = False
        self._connected = False
        self._dropped_ms = 0.0

    @property
    def overflows(self) -> int:
        """Times the ring buffer was full and the oldest audio was dropped."""
        return self._ring.overflows

    @property
    def dropped_ms(self) -> float:
        """Audio dropped on overflow, in ms."""
        return self._dropped_ms + self._dropped(self._ring)

    def _dropped(self, ring: ByteRing) -> float:
        return ring.dropped_bytes / self._converter.frame / self._converter.rate * 1000

    def stop(self) -> None:
        """End the stream: ``run`` puts ``EndOfStream`` and returns."""
        self._stop.set()
        self._wake.set()

    def _begin(self, rate: int, channels: int = 1, dtype: str = "int16") -> None:
        """A session opens with this device format (call before its first ``_push``)."""
        old = self._ring
        self._converter = Converter(rate, channels, dtype)
        self._ring = ByteRing(self.buffer_ms * rate * self._converter.frame // 1000, self._converter.frame)
        self._ring.overflows = old.overflows
        self._dropped_ms += self._dropped(old)

    def _push(self, raw: bytes) -> None:
        """Device audio arrived: never blocks; callable from a device thread."""
        self._ring.write(raw)
        if self._flagged or self._loop is None:
            return
        self._flagged = True
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
            self._loop.call_soon_threadsafe(self._wake.set)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self.on_state is not None and state != "stopped":
                self.on_state(state)

    async def _session(self) -> None:
        raise NotImplementedError

    async def run(self, outbox: asyncio.Queue[Message], clock: StreamClock) -> None:
        self._loop = asyncio.get_running_loop()
        start_ns = time.monotonic_ns()
        clock.start(start_ns)
        try:
            async with asyncio.TaskGroup() as group:
                device = group.create_task(self._devices(), name=f"{self.name}-device")
                try:
                    await self._pump(outbox, clock, start_ns)
                finally:
                    device.cancel()
        finally:
            self._set_state("stopped")
        clock.ended()
        await outbox.put(EndOfStream())

    async def _pump(self, outbox: asyncio.Queue[Message], clock: StreamClock, start_ns: int) -> None:
        chunk = self.chunk_ms * SAMPLE_RATE * 2 // 1000
        pending = bytearray()
        position_ms = 0.0
        while not self._stop.is_set():
            if not self._wake.is_set():
                try:
                    async with asyncio.timeout(self.chunk_ms / 1000):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            self._wake.clear()
            self._flagged = False
            raw = self._ring.read_all()
            if raw:
                pending += self._converter.convert(raw)
                if not self._connected:
                    self._connected = True
                    self.backoff.reset()
                    self._set_state("listening")
            elif not self._connected:  # the device is away: its time passes as silence
                due_ms = (time.monotonic_ns() - start_ns) / 1e6 - position_ms - len(pending) / 32
                if due_ms >= self.chunk_ms:
                    gap = int(due_ms // self.chunk_ms) * chunk
                    pending += bytes(gap)
                    self.silence_ms += gap / 32
            while len(pending) >= chunk:
                await outbox.put(AudioIn(bytes(pending[:chunk]), position_ms))
                del pending[:chunk]
                position_ms += self.chunk_ms
                clock.fed(position_ms)

    async def _devices(self) -> None:
        """Open sessions until stopped; after each failure report, back off, retry."""
        while not self._stop.is_set():
            self.backoff.attempts += 1
            opened_ns = time.monotonic_ns()
            session = asyncio.create_task(self._session(), name=f"{self.name}-session")
            try:
                reason = await self._watch(session, opened_ns)
            finally:
                if not session.done():
                    session.cancel()
                    await asyncio.wait([session])
            self._connected = False
            if self._stop.is_set():
                return
            self.losses += 1
            self.last_error = reason
            delay = self.backoff.next()
            log.warning("%s: %s; retrying in %.2f s", self.name, reason, delay)
            self._set_state("waiting_for_device")
            try:
                async with asyncio.timeout(delay):
                    await self._stop.wait()
            except TimeoutError:
                pass

    async def _watch(self, session: asyncio.Task[None], opened_ns: int) -> str:
        """Wait for the session to fail or stall; return why it ended."""
        while not session.done():
            await asyncio.wait([session], timeout=0.25)
            last = max(self._ring.last_write_ns, opened_ns)
            if not session.done() and time.monotonic_ns() - last > self.stall_s * 1e9:
                return f"no audio from the device for {self.stall_s:.1f} s"
        if session.cancelled():
            return "session cancelled"
        err = session.exception()
        if err is None:
            return "the device stream ended"
        if isinstance(err, DeviceLost | AssistantError | OSError):
            return str(err)
        raise err


# The sink side ----------------------------------------------------------------------------------


class Playout:
    """Audio queued for a speaker at its rate, pulled block by block by the device side.

    Thread-safe: ``pull`` may run in a device callback. Remembers what it handed out and when it
    will be heard (``delay_ns`` after the pull), for ``level()``.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._queue = bytearray()
        self._heard: list[tuple[int, int, float]] = []
        """(start_ns, end_ns, rms) of recently pulled blocks, oldest first."""

    @property
    def queued_ms(self) -> float:
        return len(self._queue) / 2 / self.rate * 1000

    def add(self, pcm: bytes) -> None:
        with self._lock:
            self._queue += pcm

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._heard.clear()

    def pull(self, frames: int, delay_ns: int = 0) -> bytes:
        """``frames`` samples (silence where nothing is queued) for the device."""
        with self._lock:
            data = bytes(self._queue[: frames * 2])
            del self._queue[: frames * 2]
        rms = 0.0
        if data:
            samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
            rms = float(np.sqrt(np.mean(samples * samples)))
        start = time.monotonic_ns() + delay_ns
        with self._lock:
            self._heard.append((start, start + frames * 1_000_000_000 // self.rate, rms))
            del self._heard[:-64]
        return data + bytes(frames * 2 - len(data))

    def level(self) -> float:
        """RMS (0..1) of the block being heard now; 0 when silent."""
        now = time.monotonic_ns()
        with self._lock:
            for start, end, rms in reversed(self._heard):
                if start <= now < end:
                    return rms
        return 0.0

    def busy(self) -> bool:
        """Audio is queued, or handed out and not yet heard."""
        now = time.monotonic_ns()
        with self._lock:
            return bool(self._queue) or any(end > now and rms > 0 for _, end, rms in self._heard)


class LiveSink:
    """Base of the live speakers: ``write``/``turn_done``/``close`` plus ``interrupt``,
    ``playback_level`` and ``playing`` for barge-in.

    ``write`` queues audio and waits only while more than ``ahead_ms`` is queued, so a slow
    device holds the writer back without blocking the loop. Subclasses implement ``_session()``:
    open the device at ``self.rate``, call ``_ready()`` once it plays, then feed it
    ``self.playout.pull(...)`` and call ``_progress()`` until it fails (raise ``DeviceLost``).
    While the device is away, written audio is dropped and counted (``dropped_ms``): a reply is
    never played late.
    """

    name = "live-sink"

    def __init__(
        self,
        *,
        rate: int | None = None,
        on_state: StateCallback | None = None,
        ahead_ms: int = 200,
        block_ms: int = 20,
        backoff: Backoff | None = None,
        stall_s: float = 3.0,
    ) -> None:
        """``rate``: the device rate in Hz (default: the first audio's; other rates are
        resampled to it); ``ahead_ms``: audio queued ahead of the device, in ms; ``block_ms``:
        the device block, in ms; ``stall_s``: a device that takes nothing for this long is lost."""
        self.rate = rate
        self.on_state = on_state
        self.ahead_ms = ahead_ms
        self.block_ms = block_ms
        self.backoff = backoff or Backoff()
        self.stall_s = stall_s
        self.state = "starting"
        """``starting``, ``ready``, ``waiting_for_device`` or ``closed``."""
        self.losses = 0
        self.interrupts = 0
        self.dropped_ms = 0.0
        """Audio written while the device was away (dropped), in ms."""
        self.last_error = ""
        self.playout = Playout(rate or 22_050)
        self._resamplers: dict[int, object] = {}
        self._task: asyncio.Task[None] | None = None
        self._progress_ns = 0

    @property
    def playing(self) -> bool:
        """Audio is queued or still being heard."""
        return self.playout.busy()

    def playback_level(self) -> float:
        """RMS (0..1) of the audio being played right now; 0 when silent."""
        return self.playout.level()

    def interrupt(self) -> None:
        """Drop everything queued; the device falls silent within its own short buffer."""
        self.interrupts += 1
        self.playout.clear()
        self._resamplers.clear()

    async def __aenter__(self) -> LiveSink:
        if self.rate is not None:
            self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _start(self) -> None:
        if self._task is None and self.state != "closed":
            self._task = asyncio.create_task(self._devices(), name=f"{self.name}-device")

    def _convert(self, pcm: bytes, rate: int) -> bytes:
        if self.rate is None:
            self.rate = rate
            self.playout = Playout(rate)
        if rate == self.rate:
            return pcm
        stream = self._resamplers.get(rate)
        if stream is None:
            import soxr

            stream = self._resamplers[rate] = soxr.ResampleStream(rate, self.rate, 1, dtype="int16")
        out = stream.resample_chunk(np.frombuffer(pcm, dtype="<i2"))  # type: ignore[attr-defined]
        return np.asarray(out, dtype="<i2").tobytes()

    async def write(self, pcm: bytes, sample_rate: int) -> None:
        """Queue mono int16 audio at ``sample_rate`` Hz; waits while ``ahead_ms`` is queued."""
        if self.state == "closed":
            return
        pcm = self._convert(pcm, sample_rate)
        self._start()
        if self.state == "waiting_for_device":
            self.dropped_ms += len(pcm) / 2 / (self.rate or sample_rate) * 1000
            return
        self.playout.add(pcm)
        while self.playout.queued_ms > self.ahead_ms and self.state in ("starting", "ready"):  # noqa: ASYNC110
            await asyncio.sleep(self.block_ms / 1000)  # the device side (maybe a thread) frees room

    async def turn_done(self) -> None:
        """Wait until the reply has been heard (or dropped by ``interrupt``/device loss)."""
        deadline = time.monotonic() + self.playout.queued_ms / 1000 + 2 * self.stall_s
        while self.playing and self.state in ("starting", "ready") and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(self.block_ms / 1000)

    async def close(self) -> None:
        """Stop playing and release the device (its process reaped, its stream closed)."""
        self.state = "closed"
        self.playout.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    def _ready(self) -> None:
        """The backend's device plays (call from the loop)."""
        self.backoff.reset()
        self._progress()
        self._set_state("ready")

    def _progress(self) -> None:
        """The device took audio (callable from any thread)."""
        self._progress_ns = time.monotonic_ns()

    def _set_state(self, state: str) -> None:
        if state != self.state and self.state != "closed":
            self.state = state
            if self.on_state is not None:
                self.on_state(state)

    async def _session(self) -> None:
        raise NotImplementedError

    async def _devices(self) -> None:
        while self.state != "closed":
            self.backoff.attempts += 1
            self._progress_ns = time.monotonic_ns()
            session = asyncio.create_task(self._session(), name=f"{self.name}-session")
            try:
                reason = await self._watch(session)
            finally:
                if not session.done():
                    session.cancel()
                    await asyncio.wait([session])
            if self.state == "closed":
                return
            self.losses += 1
            self.last_error = reason
            self.playout.clear()
            delay = self.backoff.next()
            log.warning("%s: %s; retrying in %.2f s", self.name, reason, delay)
            self._set_state("waiting_for_device")
            await asyncio.sleep(delay)

    async def _watch(self, session: asyncio.Task[None]) -> str:
        while not session.done():
            await asyncio.wait([session], timeout=0.25)
            if not session.done() and time.monotonic_ns() - self._progress_ns > self.stall_s * 1e9:
                return f"the device took no audio for {self.stall_s:.1f} s"
        if session.cancelled():
            return "session cancelled"
        err = session.exception()
        if err is None:
            return "the device stream ended"
        if isinstance(err, DeviceLost | AssistantError | OSError):
            return str(err)
        raise err
