"""Audio: a 0.5 s test capture from the microphone, the speaker opened, ALSA permissions.

The microphone and speaker are opened by the callables in ``Setup`` (the CLI hands over the
ones ``run`` uses), so the check runs the daemon's own backends (``PulseSource``,
``SoundDeviceSource``, ``PulseSink``, ``SoundDeviceSink``). A device session that fails is
reported with its coded error (``audio_device_missing``) and a fix for the platform; audio that
is all zeros (digital silence) is a warning: a muted, wrong or not-permitted microphone.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.audio.devices import DeviceInfo
from assistant.audio.live import LiveSink, LiveSource
from assistant.audio.pulse import tool_message
from assistant.clock import StreamClock
from assistant.doctor.base import Finding, Setup, folder_of, unwritable, user_name
from assistant.errors import AssistantError, AudioDeviceError
from assistant.messages import SAMPLE_RATE, AudioIn, Message

OPEN_LIMIT_S = 5.0
"""How long a device may take to deliver its first audio (or to start playing)."""


@dataclass(frozen=True, slots=True)
class Capture:
    pcm: bytes
    """What the device delivered after it started, 16 kHz mono int16."""
    error: str = ""
    """Why the device gave no audio (empty: it did)."""
    code: str = AudioDeviceError.code


def level_dbfs(pcm: bytes) -> tuple[float, float]:
    """(RMS, peak) of int16 audio in dBFS (a full-scale square wave is 0); -inf for zeros."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    if not samples.size:
        return -math.inf, -math.inf
    rms, peak = float(np.sqrt(np.mean(samples * samples))), float(np.max(np.abs(samples)))
    return _db(rms), _db(peak)


def _db(amplitude: float) -> float:
    return 20 * math.log10(amplitude) if amplitude > 0 else -math.inf


async def capture(source: LiveSource, seconds: float, limit_s: float = OPEN_LIMIT_S) -> Capture:
    """Run ``source`` until it has delivered ``seconds`` of device audio, failed, or ``limit_s``
    passed without audio. The silence a live source feeds while its device is away is not kept."""
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    task = asyncio.create_task(source.run(outbox, StreamClock(realtime=True)), name="doctor-capture")
    loop = asyncio.get_running_loop()
    need = int(seconds * SAMPLE_RATE) * 2
    pcm = bytearray()
    started = False
    deadline = loop.time() + limit_s
    error, code = "", AudioDeviceError.code
    try:
        while len(pcm) < need:
            await asyncio.sleep(0.02)
            batch = [outbox.get_nowait() for _ in range(outbox.qsize())]
            if source.losses:
                error = source.last_error
                break
            if task.done():
                err = None if task.cancelled() else task.exception()
                error = getattr(err, "message", None) or str(err or "the device stream ended")
                code = getattr(err, "code", code)
                break
            if not started:
                # the batch that brought the device up may still hold the silence fed before it
                started = source.state == "listening"
                deadline = loop.time() + limit_s if started else deadline
            else:
                pcm += b"".join(m.pcm for m in batch if isinstance(m, AudioIn))
            if loop.time() > deadline:
                error = f"no audio from the device for {limit_s:.0f} s"
                break
    finally:
        source.stop()
        done, _ = await asyncio.wait([task], timeout=OPEN_LIMIT_S)
        if not done:
            task.cancel()
            await asyncio.wait([task])
    late = None if task.cancelled() else task.exception()
    if late is not None and not error:
        raise late  # not device trouble but a bug: run_checks reports the check as failed
    return Capture(bytes(pcm[:need]), tool_message(error), code)


def _devices(backend: str, kind: str) -> list[DeviceInfo]:
    """The backend's devices of this kind (empty when it cannot be asked)."""
    from assistant.audio.devices import portaudio_devices, pulse_devices

    try:
        devices = pulse_devices() if backend == "pulse" else portaudio_devices()
    except AssistantError:
        return []
    return [d for d in devices if (d.inputs if kind == "input" else d.outputs) > 0]


def _describe(device: object, backend: str, kind: str) -> str:
    """``pulse source mic.monitor (default), 44100 Hz`` for the device a source or sink opened."""
    what = {"input": "source", "output": "sink"}[kind] if backend == "pulse" else f"{kind} device"
    usable = _devices(backend, kind)
    default = device in (None, "", "default")
    if default:
        match = next((d for d in usable if d.is_default), None)
    else:
        match = next((d for d in usable if str(device) in (d.name, str(d.index))), None)
        match = match or next((d for d in usable if str(device).lower() in d.name.lower()), None)
    if match is None:
        return f"{backend} {what} {device or '(default)'}"
    return f"{backend} {what} {match.name}{' (default)' if default else ''}, {match.default_rate} Hz"


def _backend(device_owner: object) -> str:
    return "pulse" if type(device_owner).__name__.startswith("Pulse") else "portaudio"


def device_fix(backend: str, kind: str, error: str, setup: Setup) -> str:
    """What to do when a device session failed with ``error``."""
    text = error.lower()
    option, alias = ("--input", "mic") if kind == "input" else ("--output", "speaker")
    if backend == "pulse":
        if "not found: install" in text:
            return "pkg install pulseaudio" if setup.termux else "apt-get install pulseaudio-utils"
        if "no such entity" in text:
            names = [d.name for d in _devices("pulse", kind)]
            choices = f" ({', '.join(names)})" if names else ""
            return (
                f"choose a PulseAudio {'source' if kind == 'input' else 'sink'} from `assistant devices`"
                f"{choices}: {option} pulse:NAME, or {option} {alias} for the server's default"
            )
        if setup.termux:
            return (
                "start PulseAudio with the microphone module: pulseaudio --start"
                " --load=module-sles-source --exit-idle-time=-1 (the Termux service script does this)"
            )
        return (
            "start the sound server of the user who runs the daemon (systemctl --user start"
            " pipewire-pulse.socket, or pulseaudio --start); on a box without one, use the ALSA"
            f" system unit with {option} portaudio"
        )
    if "not available" in text:
        if setup.termux:
            return "pkg install portaudio; pip install sounddevice"
        return "apt-get install libportaudio2; pip install sounddevice"
    if "no input device" in text or "no output device" in text or "matches several" in text:
        return f"choose a device from `assistant devices`: {option} portaudio:NAME or portaudio:INDEX"
    return (
        "another program may hold the device (ALSA hw devices are exclusive), or this user cannot"
        f" open /dev/snd: sudo usermod -aG audio {user_name()}, then log in again; see"
        " `assistant devices`"
    )


def silence_fix(backend: str, setup: Setup) -> str:
    if setup.termux:
        return (
            "Android hands Termux silence until the microphone is allowed: install the Termux:API app"
            " and `pkg install termux-api`, run `termux-microphone-record -d` once and allow it, then"
            " `pactl load-module module-sles-source`"
        )
    if backend == "pulse":
        return (
            "unmute the source and raise it: pactl set-source-mute @DEFAULT_SOURCE@ 0; pactl"
            " set-source-volume @DEFAULT_SOURCE@ 100% (or pavucontrol); or choose another source"
            " from `assistant devices`"
        )
    return (
        "unmute the capture channel in alsamixer (F4, space), or choose another device from"
        " `assistant devices`"
    )


async def check_input(setup: Setup) -> list[Finding]:
    """Capture ``setup.capture_s`` seconds from the live input; or read the input file."""
    spec = setup.input
    if spec is None and not setup.config.mqtt.enabled:
        fix = "give --input mic, pulse:NAME, portaudio[:NAME] or a file; or --mqtt URL"
        message = "[config_invalid] no --input and MQTT is off: run would not start"
        return [Finding("input", "fail", message, fix)]
    if spec is None:
        return [Finding("input", "ok", "no --input: no microphone (an MQTT-only daemon)")]
    if setup.open_source is None:
        if spec == "-":
            return [Finding("input", "ok", "--input -: raw PCM on stdin (not checked)")]
        from assistant.audio.convert import read_audio_file

        try:
            pcm = await asyncio.to_thread(read_audio_file, spec)
        except AssistantError as err:
            return [
                Finding(
                    "input",
                    "fail",
                    f"[{err.code}] {err.message}",
                    "give a WAV, FLAC or OGG file, or mic / pulse:NAME / portaudio[:NAME]",
                )
            ]
        return [Finding("input", "ok", f"{spec}: {len(pcm) / 2 / SAMPLE_RATE:.1f} s of audio")]
    source = setup.open_source(lambda _state: None)
    if not isinstance(source, LiveSource):
        return [Finding("input", "ok", f"--input {spec}: not a live device (not checked)")]
    backend = _backend(source)
    got = await capture(source, setup.capture_s)
    device = getattr(source, "device", None)
    name = await asyncio.to_thread(_describe, device, backend, "input")
    if got.error:
        fix = await asyncio.to_thread(device_fix, backend, "input", got.error, setup)
        return [Finding("input", "fail", f"[{got.code}] {name}: {got.error}", fix)]
    rms, peak = level_dbfs(got.pcm)
    seconds = len(got.pcm) / 2 / SAMPLE_RATE
    if peak == -math.inf:
        return [
            Finding(
                "input",
                "warn",
                f"{name}: {seconds:.1f} s captured, all digital silence"
                " (a muted, wrong or not-permitted microphone)",
                silence_fix(backend, setup),
            )
        ]
    return [
        Finding(
            "input", "ok", f"{name}: {seconds:.1f} s captured, level {rms:.1f} dBFS (peak {peak:.1f} dBFS)"
        )
    ]


async def check_output(setup: Setup) -> list[Finding]:
    """Open the live output and start playing (100 ms of silence); or check the file's folder."""
    spec = setup.output
    if spec is None:
        return [Finding("output", "ok", "no --output: nothing is played")]
    if setup.open_sink is None:
        if spec == "-":
            return [Finding("output", "ok", "--output -: raw PCM on stdout")]
        why = await asyncio.to_thread(unwritable, folder_of(spec))
        if why:
            return [Finding("output", "fail", f"cannot write {spec}: {why}", "choose a writable folder")]
        return [Finding("output", "ok", f"replies are written to {spec}")]
    sink = setup.open_sink(lambda _state: None)
    if not isinstance(sink, LiveSink):
        return [Finding("output", "ok", f"--output {spec}: not a live device (not checked)")]
    backend = _backend(sink)
    error, code = "", AudioDeviceError.code
    loop = asyncio.get_running_loop()
    try:
        rate = sink.rate or 22_050
        await sink.write(bytes(rate // 10 * 2), rate)
        limit_s = max(OPEN_LIMIT_S, sink.stall_s + 1)
        deadline = loop.time() + limit_s
        while sink.state != "ready" and not sink.losses and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if sink.state != "ready":
            error = sink.last_error or f"the device did not start playing within {limit_s:.0f} s"
    except AssistantError as err:
        error, code = err.message, err.code
    finally:
        with contextlib.suppress(AssistantError):
            await sink.close()
    name = await asyncio.to_thread(_describe, getattr(sink, "device", None), backend, "output")
    error = tool_message(error)
    if error:
        fix = await asyncio.to_thread(device_fix, backend, "output", error, setup)
        return [Finding("output", "fail", f"[{code}] {name}: {error}", fix)]
    return [Finding("output", "ok", f"{name}: opened and playing")]


def _alsa_denied(snd: Path) -> tuple[list[Path], int]:
    nodes = [p for p in sorted(snd.iterdir()) if p.is_char_device()]
    return [p for p in nodes if not os.access(p, os.R_OK | os.W_OK)], len(nodes)


async def check_permissions(setup: Setup, snd: Path = Path("/dev/snd")) -> list[Finding]:
    """ALSA device nodes and the ``audio`` group, where PortAudio opens devices directly."""
    specs = [s for s in (setup.input, setup.output) if s is not None]
    if not any(s.partition(":")[0] == "portaudio" for s in specs):
        return []
    user = user_name()
    try:
        in_group = grp.getgrnam("audio").gr_gid in os.getgroups()
    except KeyError:
        in_group = False
    if not await asyncio.to_thread(snd.is_dir):
        return [
            Finding(
                "permissions",
                "ok",
                f"no {snd}: PortAudio reaches sound through a sound server's ALSA plugin only",
            )
        ]
    denied, total = await asyncio.to_thread(_alsa_denied, snd)
    group = "in the audio group" if in_group else "not in the audio group"
    if denied:
        return [
            Finding(
                "permissions",
                "fail",
                f"user {user} ({group}) cannot open {len(denied)} of {total} ALSA devices ({denied[0]})",
                f"sudo usermod -aG audio {user}, then log in again (the system unit runs with"
                " SupplementaryGroups=audio)",
            )
        ]
    return [Finding("permissions", "ok", f"user {user} ({group}) can open the {total} ALSA devices in {snd}")]
