"""The PortAudio backend through the ALSA ``pulse`` device into a private PulseAudio server."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from assistant.audio.devices import list_devices, resolve_device
from assistant.clock import StreamClock
from assistant.errors import AudioDeviceError
from assistant.messages import AudioIn, EndOfStream, Message

from .pulse import PulseServer, pulse_fixture  # noqa: F401 - the fixture
from .test_audio_pulse import RATE, Recorder, loud, tone, until


def portaudio_or_skip() -> None:
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError) as err:
        reason = f"sounddevice/PortAudio not installed ({err})"
        pytest.skip(f"{reason}: pip install sounddevice; apt-get install libportaudio2")


def test_devices_are_listed_and_chosen_by_name_or_index(pulse: PulseServer) -> None:
    portaudio_or_skip()
    listing = list_devices()
    pulse_names = {d.name for d in listing.devices if d.backend == "pulse"}
    assert {"mic.monitor", "spk"} <= pulse_names, listing
    pa = [d for d in listing.devices if d.backend == "portaudio"]
    if not any(d.name == "pulse" for d in pa):
        pytest.skip("PortAudio has no ALSA 'pulse' device (apt-get install libasound2-plugins)")
    index = resolve_device("pulse", "input", pa)
    assert resolve_device(str(index), "output", pa) == index
    with pytest.raises(AudioDeviceError, match="no input device named"):
        resolve_device("no-such", "input", pa)


async def test_sounddevice_records_and_plays_through_pulse(pulse: PulseServer, tmp_path: object) -> None:
    portaudio_or_skip()
    from assistant.audio.portaudio import SoundDeviceSink, SoundDeviceSource

    recorder = Recorder(pulse)
    await recorder.flowing()
    async with SoundDeviceSink("pulse") as sink:  # the server's default sink: spk
        for piece in np.array_split(tone(440, 1.0, RATE), 50):
            await sink.write(piece.tobytes(), RATE)
        await sink.turn_done()
        await asyncio.sleep(0.3)
        trouble = (sink.losses, sink.last_error)
    samples, _ = recorder.stop()
    heard = loud(samples)
    assert heard.size and 0.8 < (heard[-1] - heard[0]) / 16_000 < 1.2, trouble

    source = SoundDeviceSource("pulse")  # the server's default source: mic.monitor
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    task = asyncio.create_task(source.run(outbox, StreamClock(realtime=True)), name="source")
    await until(lambda: source.state == "listening", 8)
    from .conftest import write_wav

    wav = write_wav(tmp_path / "tone.wav", tone(1000, 0.5, RATE), RATE)  # type: ignore[operator]
    started = time.monotonic()
    pulse.play(wav).wait(10)
    await asyncio.sleep(0.5)
    source.stop()
    await task
    items = [outbox.get_nowait() for _ in range(outbox.qsize())]
    assert isinstance(items[-1], EndOfStream)
    pcm = np.frombuffer(b"".join(m.pcm for m in items if isinstance(m, AudioIn)), dtype="<i2")
    assert loud(pcm).size > 0.3 * 16_000, f"nothing captured within {time.monotonic() - started:.1f} s"
