"""Microphone and speaker through PortAudio (``sounddevice``; system ``libportaudio2``).

sounddevice is imported lazily: without it (or without the PortAudio library) opening a device
is an ``AudioDeviceError`` (``audio_device_missing``) that says what to install.

The capture callback only copies the block into the source's ring (``live.ByteRing``: drops
the oldest audio when full and counts it); resampling to 16 kHz runs on the event loop. The
playback callback only pulls a block from the sink's ``Playout``. Opening and closing streams
block, so they run in a worker thread; a close that hangs on a dead device is abandoned (a daemon
thread) rather than hanging the daemon. Device selection: ``devices.resolve_device``.
"""

from __future__ import annotations

import asyncio
import threading
from types import ModuleType
from typing import Any

from assistant.audio.devices import resolve_device
from assistant.audio.live import DeviceLost, LiveSink, LiveSource
from assistant.errors import AudioDeviceError


def sounddevice() -> ModuleType:
    """The sounddevice module, or a clear error naming what to install."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as err:
        raise AudioDeviceError(
            f"PortAudio is not available ({err}): pip install sounddevice; apt-get install libportaudio2"
        ) from err
    module: ModuleType = sd
    return module


def _close(stream: Any, timeout_s: float = 2.0) -> None:
    """Stop and close a stream in a daemon thread; give up waiting after ``timeout_s``."""
    thread = threading.Thread(
        target=lambda: (stream.abort(), stream.close()), name="portaudio-close", daemon=True
    )
    thread.start()
    thread.join(timeout_s)


def _on_finish(loop: asyncio.AbstractEventLoop, finished: asyncio.Event) -> Any:
    def finished_callback() -> None:
        loop.call_soon_threadsafe(finished.set)

    return finished_callback


async def _open(factory: Any, **kwargs: Any) -> Any:
    sd = sounddevice()

    def start() -> Any:
        stream = factory(**kwargs)
        stream.start()
        return stream

    try:
        return await asyncio.to_thread(start)
    except sd.PortAudioError as err:
        raise DeviceLost(f"PortAudio cannot open device {kwargs.get('device')}: {err}") from err


class SoundDeviceSource(LiveSource):
    """Records a PortAudio input device (name, index or None for the default)."""

    name = "portaudio-source"

    def __init__(self, device: str | int | None = None, *, rate: int | None = None, **kwargs: object) -> None:
        """``device``: index, exact name or unique part of a name; ``rate``: the device rate in
        Hz (default: 16000 if the device takes it, else its default rate). Other keyword
        arguments as ``LiveSource``."""
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.device = device
        self.rate = rate
        self.device_overflows = 0
        """Blocks PortAudio itself reported as overflowed (the callback ran too late)."""

    async def _session(self) -> None:
        sd = sounddevice()
        index = resolve_device(self.device, "input")
        rate = self.rate or 16_000
        try:
            sd.check_input_settings(device=index, samplerate=rate, channels=1, dtype="int16")
        except sd.PortAudioError:
            if self.rate is not None:
                raise
            rate = int(sd.query_devices(index, "input")["default_samplerate"])
        self._begin(rate, 1, "int16")
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()

        def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
            if status.input_overflow:
                self.device_overflows += 1
            self._push(bytes(indata))

        stream = await _open(
            sd.RawInputStream,
            device=index,
            samplerate=rate,
            channels=1,
            dtype="int16",
            blocksize=rate * self.chunk_ms // 1000,
            callback=callback,
            finished_callback=_on_finish(loop, finished),
        )
        try:
            await finished.wait()
        finally:
            await asyncio.to_thread(_close, stream)
        raise DeviceLost(f"PortAudio input {self.device} stopped")


class SoundDeviceSink(LiveSink):
    """Plays on a PortAudio output device (name, index or None for the default)."""

    name = "portaudio-sink"

    def __init__(self, device: str | int | None = None, *, latency_s: float = 0.1, **kwargs: object) -> None:
        """``device``: index, exact name or unique part of a name; ``latency_s``: PortAudio's
        output latency, in s ("low" underruns through ALSA's pulse plugin on a busy 2-core box;
        ``interrupt()`` is heard within about this). Other keyword arguments as ``LiveSink``
        (``rate``, ``on_state``, ``ahead_ms``, ``block_ms``, ``stall_s``)."""
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.device = device
        self.latency_s = latency_s

    async def _session(self) -> None:
        sd = sounddevice()
        index = resolve_device(self.device, "output")
        rate = self.rate or 22_050
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()
        opened: list[Any] = []

        def callback(outdata: Any, frames: int, time_info: Any, status: Any) -> None:
            # the DAC time is 0 on some hosts (ALSA's pulse plugin): fall back to the stream latency
            delay = max(
                time_info.outputBufferDacTime - time_info.currentTime, opened[0].latency if opened else 0.0
            )
            outdata[:] = self.playout.pull(frames, delay_ns=int(delay * 1e9))
            self._progress()

        stream = await _open(
            sd.RawOutputStream,
            device=index,
            samplerate=rate,
            channels=1,
            dtype="int16",
            blocksize=rate * self.block_ms // 1000,
            latency=self.latency_s,
            callback=callback,
            finished_callback=_on_finish(loop, finished),
        )
        opened.append(stream)
        self._ready()
        try:
            await finished.wait()
        finally:
            await asyncio.to_thread(_close, stream)
        raise DeviceLost(f"PortAudio output {self.device} stopped")
