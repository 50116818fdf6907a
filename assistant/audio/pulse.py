"""PulseAudio microphone and speaker through the ``parec``/``pacat`` tools (pulseaudio-utils).

This is the path that works wherever a PulseAudio server or PipeWire's pulse shim runs: Linux
desktops, and Termux on Android (``pkg install pulseaudio``; the microphone through
``module-sles-source``). No client library is linked: each device session is one subprocess,
always reaped, and a server that goes away ends the session, which ``live.py`` retries.

- ``PulseSource``: ``parec --rate=16000 --channels=1 --format=s16le`` (the server resamples),
  ``latency_ms`` of fragment size, read on the event loop into the source's ring.
- ``PulseSink``: ``pacat`` at the voice's rate, fed ``block_ms`` blocks paced in real time and at
  most ``lead_ms`` ahead of the clock, so ``interrupt()`` is heard within ``lead_ms`` plus the
  server's ``latency_ms`` (measured about 50 ms with the defaults) and ``playback_level()``
  and ``playback_peak()`` know which block is heard when.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import re
import shutil
import time
from asyncio.subprocess import DEVNULL, PIPE, Process

from assistant.audio.live import DeviceLost, LiveSink, LiveSource
from assistant.clock import StreamClock
from assistant.errors import AudioDeviceError
from assistant.messages import SAMPLE_RATE, Message

READY_MARK = b"Stream successfully created"
"""What ``pacat -v``/``parec -v`` print once the server has accepted the stream."""


def pulse_tool(name: str) -> str:
    """Path of ``parec``/``pacat``/``pactl``, or a clear error naming the package to install."""
    path = shutil.which(name)
    if path is None:
        raise AudioDeviceError(
            f"{name} not found: install pulseaudio-utils (Debian/Ubuntu) or pulseaudio (Termux)"
        )
    return path


def pulse_args(device: str | None, server: str | None) -> list[str]:
    return ([f"--device={device}"] if device else []) + ([f"--server={server}"] if server else [])


async def reap(proc: Process, grace_s: float = 1.0) -> int:
    """End ``proc`` (terminate, then kill after ``grace_s`` seconds) and collect its status."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(grace_s):
                return await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    return await proc.wait()


async def _stderr_tail(proc: Process) -> str:
    if proc.stderr is None:
        return ""
    try:
        async with asyncio.timeout(0.5):
            data = await proc.stderr.read(4000)
    except TimeoutError:
        return ""
    return tool_message(data)


_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
"""Terminal control sequences (pacat's progress line erases itself with them)."""


def tool_message(data: bytes | str) -> str:
    """What parec/pacat said on stderr, as one line: no progress lines or terminal codes."""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    lines = [line.strip() for line in _ESCAPES.sub("", text).replace("\r", "\n").splitlines()]
    kept = [line for line in lines if line and "Time:" not in line and "Latency" not in line]
    return "; ".join(kept)[-300:]


def _shallow(transport: asyncio.BaseTransport) -> None:
    """Keep at most a page of audio between us and pacat: no user-space write buffer, and a
    4 KiB pipe (Linux), so a device that takes audio late holds the writer back at once instead
    of piling up seconds of delay (and ``interrupt`` stays fast)."""
    if isinstance(transport, asyncio.WriteTransport):
        transport.set_write_buffer_limits(high=0)
    pipe = transport.get_extra_info("pipe")
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if pipe is not None and setsize is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), setsize, 4096)


class PulseSource(LiveSource):
    """Records a PulseAudio source (e.g. ``mic.monitor``; None: the server's default)."""

    name = "pulse-source"

    def __init__(
        self,
        device: str | None = None,
        *,
        server: str | None = None,
        latency_ms: int = 10,
        **kwargs: object,
    ) -> None:
        """``device``: a PulseAudio source name; ``server``: as ``--server`` (default: the
        environment's); ``latency_ms``: the recording fragment, in ms. Other keyword arguments
        as ``LiveSource`` (``on_state``, ``chunk_ms``, ``buffer_ms``, ``backoff``, ``stall_s``)."""
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.device = device
        self.server = server
        self.latency_ms = latency_ms

    async def run(self, outbox: asyncio.Queue[Message], clock: StreamClock) -> None:
        pulse_tool("parec")  # a missing tool is a setup error, not device trouble to wait out
        await super().run(outbox, clock)

    async def _session(self) -> None:
        args = [
            *pulse_args(self.device, self.server),
            f"--rate={SAMPLE_RATE}",
            "--channels=1",
            "--format=s16le",
            f"--latency-msec={self.latency_ms}",
            "--client-name=assistant",
            "--stream-name=microphone",
        ]
        self._begin(SAMPLE_RATE)
        proc = await asyncio.create_subprocess_exec(
            pulse_tool("parec"), *args, stdin=DEVNULL, stdout=PIPE, stderr=PIPE
        )
        assert proc.stdout is not None
        try:
            while data := await proc.stdout.read(4096):
                self._push(data)
            why = await _stderr_tail(proc)
        finally:
            code = await reap(proc)
        raise DeviceLost(
            f"parec {self.device or '(default)'} exited with status {code}: {why or 'no message'}"
        )


class PulseSink(LiveSink):
    """Plays on a PulseAudio sink (e.g. ``spk``; None: the server's default) through ``pacat``."""

    name = "pulse-sink"

    def __init__(
        self,
        device: str | None = None,
        *,
        server: str | None = None,
        latency_ms: int = 30,
        lead_ms: int = 20,
        **kwargs: object,
    ) -> None:
        """``device``: a PulseAudio sink name; ``server``: as ``--server``; ``latency_ms``: the
        server-side buffer, in ms; ``lead_ms``: how far ahead of real time blocks are written,
        in ms. Other keyword arguments as ``LiveSink`` (``rate``, ``on_state``, ``ahead_ms``,
        ``block_ms``, ``backoff``, ``stall_s``)."""
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.device = device
        self.server = server
        self.latency_ms = latency_ms
        self.lead_ms = lead_ms

    async def write(self, pcm: bytes, sample_rate: int) -> None:
        pulse_tool("pacat")
        await super().write(pcm, sample_rate)

    async def _session(self) -> None:
        rate = self.rate or 22_050
        args = [
            "--playback",
            "-v",
            *pulse_args(self.device, self.server),
            f"--rate={rate}",
            "--channels=1",
            "--format=s16le",
            f"--latency-msec={self.latency_ms}",
            "--client-name=assistant",
            "--stream-name=speaker",
        ]
        proc = await asyncio.create_subprocess_exec(
            pulse_tool("pacat"), *args, stdin=PIPE, stdout=DEVNULL, stderr=PIPE
        )
        ready = asyncio.Event()
        tail = bytearray()

        async def watch_stderr() -> None:
            assert proc.stderr is not None
            while chunk := await proc.stderr.read(1024):
                tail.extend(chunk)
                if READY_MARK in tail:
                    ready.set()
                del tail[:-2000]

        reader = asyncio.create_task(watch_stderr(), name=f"{self.name}-stderr")
        try:
            await self._play(proc, ready, rate)
        finally:
            code = await reap(proc)
            with contextlib.suppress(asyncio.CancelledError):
                async with asyncio.timeout(0.5):
                    await reader
            reader.cancel()
            await asyncio.wait([reader])
        why = tool_message(bytes(tail))
        raise DeviceLost(
            f"pacat {self.device or '(default)'} exited with status {code}: {why or 'no message'}"
        )

    async def _play(self, proc: Process, ready: asyncio.Event, rate: int) -> None:
        """Wait for the stream, then feed it real-time paced blocks until pacat ends or blocks."""
        exited = asyncio.create_task(proc.wait(), name=f"{self.name}-exit")
        waiting = asyncio.create_task(ready.wait(), name=f"{self.name}-ready")
        try:
            await asyncio.wait([exited, waiting], timeout=self.stall_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (exited, waiting):
                task.cancel()
            await asyncio.wait([exited, waiting])
        if not ready.is_set():
            return  # pacat ended (or never connected): the caller reports why
        self._ready()
        assert proc.stdin is not None
        _shallow(proc.stdin.transport)
        frames = rate * self.block_ms // 1000
        block_ns = frames * 1_000_000_000 // rate
        lead_ns, latency_ns = self.lead_ms * 1_000_000, self.latency_ms * 1_000_000
        due_ns = time.monotonic_ns()
        while proc.returncode is None:
            now = time.monotonic_ns()
            if now - due_ns > 200_000_000:  # the loop fell behind: start a fresh schedule
                due_ns = now
            # heard on the schedule: pacat's buffer hides a late loop (a very late one, which
            # empties it, makes the stamps early: the echo canceller's reference then leads)
            proc.stdin.write(self.playout.pull(frames, delay_ns=due_ns - now + latency_ns))
            try:
                async with asyncio.timeout(self.stall_s):
                    await proc.stdin.drain()
            except TimeoutError:
                raise DeviceLost(f"pacat took no audio for {self.stall_s:.1f} s (output blocked)") from None
            except (BrokenPipeError, ConnectionResetError):
                return
            self._progress()
            due_ns += block_ns
            delay = (due_ns - lead_ns - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
