"""The live microphone base: device sessions, retries, and a continuous timeline.

A backend (``pulse.py``: ``parec``; ``portaudio.py``: sounddevice) only opens one *device
session* at a time: ``LiveSource._session`` captures until the device fails. Everything else
lives here:

- Device trouble: when a session fails (device missing at start, unplugged, server gone, no
  audio for ``stall_s``), the source reports ``waiting_for_device`` through ``on_state``, waits
  ``Backoff.next()`` and opens a new session; when audio flows again it reports ``listening``.
  The pipeline is never restarted.
- Timeline: ``start_ms`` is continuous. While the device is away the source goes on feeding
  *silence, paced in real time*: lost time counts as silence, so ``start_ms`` keeps tracking
  wall time since ``run`` began, an utterance cut by the loss is endpointed, and the watchdog
  sees progress (the daemon is waiting, not stalled).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from assistant.audio.common import Backoff, ByteRing, Converter, DeviceLost, StateCallback
from assistant.clock import StreamClock
from assistant.errors import AssistantError
from assistant.messages import SAMPLE_RATE, AudioIn, EndOfStream, Message

log = logging.getLogger(__name__)


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
            arrived_ns = time.monotonic_ns()
            if raw:
                arrived_ns = self._ring.last_write_ns
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
                after_ns = (len(pending) - chunk) * 1_000_000 // (2 * SAMPLE_RATE // 1000)
                await outbox.put(AudioIn(bytes(pending[:chunk]), position_ms, arrived_ns - after_ns))
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
