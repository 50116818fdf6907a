"""The live speaker base: a play-out queue the device pulls from, retries, interrupt, level.

A backend (``pulse.py``: ``pacat``; ``portaudio.py``: sounddevice) only opens one *device
session* at a time: ``LiveSink._session`` plays until the device fails; then the sink reports
``waiting_for_device``, waits ``Backoff.next()``, opens a new session and reports ``ready``
when it plays again. ``interrupt()``, ``playback_level()`` and ``playing`` serve barge-in and
the echo gate; ``played()`` is the echo canceller's far end (``reference.py``): once asked, the
play-out keeps a 16 kHz copy of its queue and files each pulled block's copy under the time it
is heard.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import numpy as np

from assistant.audio.common import Backoff, DeviceLost, StateCallback
from assistant.audio.reference import PlayedAudio, To16k
from assistant.audio.sinks import with_gain
from assistant.errors import AssistantError

log = logging.getLogger(__name__)


FORECAST_MS = 300
"""How much of the queue is filed ahead of the block just handed out, as a forecast, in ms: a
loop running late hands blocks over late, and the echo canceller reads what is heard now."""
HEARD_BLOCKS = 512
"""Pulled blocks remembered for ``level``/``peak`` (about 10 s of 20 ms blocks)."""


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
        self.paused = False
        """While True, ``pull`` hands out silence and keeps the queue for later."""
        self.played: PlayedAudio | None = None
        """Where pulled blocks are filed at 16 kHz by the time they are heard (None: not kept)."""
        self._copy = bytearray()
        """The queue at 16 kHz (kept only with ``played``), pulled in step with it."""
        self._to16k = To16k(rate)
        self._owed = 0
        """Device samples pulled times 16000 not yet turned into a 16 kHz sample (the remainder)."""

    @property
    def queued_ms(self) -> float:
        return len(self._queue) / 2 / self.rate * 1000

    def add(self, pcm: bytes) -> None:
        copy = self._to16k.convert(pcm).tobytes() if self.played is not None else b""
        with self._lock:
            self._queue += pcm
            self._copy += copy

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._heard.clear()
            self._copy.clear()
        self._to16k.reset()

    def pull(self, frames: int, delay_ns: int = 0) -> bytes:
        """``frames`` samples (silence where nothing is queued) for the device."""
        with self._lock:
            data = b"" if self.paused else bytes(self._queue[: frames * 2])
            del self._queue[: len(data)]
            copy = self._pull_copy(frames, len(data) // 2)
        rms = 0.0
        if data:
            samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
            rms = float(np.sqrt(np.mean(samples * samples)))
        start = time.monotonic_ns() + delay_ns
        with self._lock:
            self._heard.append((start, start + frames * 1_000_000_000 // self.rate, rms))
            del self._heard[:-HEARD_BLOCKS]
        if copy is not None and self.played is not None:
            self.played.write(start, copy[0], copy[1])
        return data + bytes(frames * 2 - len(data))

    def _pull_copy(self, frames: int, taken: int) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The 16 kHz copy of a block of ``frames`` device samples of which ``taken`` came from
        the queue (the rest is silence), and what is queued after it (``FORECAST_MS`` at most;
        None while paused); call under the lock."""
        if self.played is None:
            return None
        self._owed += frames * 16_000
        count, self._owed = divmod(self._owed, self.rate)
        used = min(len(self._copy) // 2, round(count * taken / frames)) if frames else 0
        block = np.zeros(count, dtype=np.int16)
        block[:used] = np.frombuffer(bytes(self._copy[: used * 2]), dtype="<i2")
        del self._copy[: used * 2]
        if not self._queue:  # the queue ran dry: its copy has nothing more to say
            self._copy.clear()
        ahead = None if self.paused else np.frombuffer(bytes(self._copy[: FORECAST_MS * 32]), dtype="<i2")
        return block, ahead

    def level(self) -> float:
        """RMS (0..1) of the block being heard now; 0 when silent."""
        now = time.monotonic_ns()
        with self._lock:
            for start, end, rms in reversed(self._heard):
                if start <= now < end:
                    return rms
        return 0.0

    def peak(self, start_ns: int, end_ns: int) -> float:
        """Largest RMS (0..1) of the blocks heard at any time from ``start_ns`` to ``end_ns``."""
        top = 0.0
        with self._lock:
            for start, end, rms in reversed(self._heard):
                if end <= start_ns:
                    break
                if start < end_ns:
                    top = max(top, rms)
        return top

    def busy(self) -> bool:
        """Audio is queued (paused or not), or handed out and not yet heard."""
        now = time.monotonic_ns()
        with self._lock:
            if self._queue:
                return True
            for _, end, rms in reversed(self._heard):
                if end <= now:
                    return False
                if rms > 0:
                    return True
            return False


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
        self.pauses = 0
        self.dropped_ms = 0.0
        """Audio written while the device was away (dropped), in ms."""
        self.last_error = ""
        self.playout = Playout(rate or 22_050)
        self._played: PlayedAudio | None = None
        self.volume = 1.0
        """Gain on what is written from now on, 0.0 to 1.0 ("volume down", "mute")."""
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

    def playback_peak(self, start_ns: int, end_ns: int) -> float:
        """Largest RMS (0..1) of the audio heard between two ``time.monotonic_ns()`` times."""
        return self.playout.peak(start_ns, end_ns)

    def played(self, start_ns: int, count: int) -> bytes:
        """``count`` samples (16 kHz mono int16) of what was heard from ``start_ns`` on
        (``time.monotonic_ns()``), silence where nothing played: the echo canceller's far end.
        The first call starts keeping it."""
        if self._played is None:
            self._played = self.playout.played = PlayedAudio()
        return self._played.read(start_ns, count).tobytes()

    def interrupt(self) -> None:
        """Drop everything queued; the device falls silent within its own short buffer."""
        self.interrupts += 1
        self.playout.clear()
        self.playout.paused = False
        self._resamplers.clear()

    def pause(self) -> None:
        """Fall silent within the device's own short buffer but keep what is queued: the user
        may be starting to speak (``resume()`` if not; ``interrupt()`` if so)."""
        if not self.playout.paused:
            self.pauses += 1
            self.playout.paused = True

    def resume(self) -> None:
        """Go on from where ``pause()`` stopped."""
        self.playout.paused = False

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
            self.playout.played = self._played
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
        pcm = with_gain(self._convert(pcm, sample_rate), self.volume)
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
