"""Audio devices: listing them (``assistant devices``) and choosing one by name or index.

``list_devices()`` returns data only (the CLI prints it): PortAudio devices through sounddevice
and PulseAudio sources/sinks through ``pactl``, plus one line per backend that could not be
asked (and why). ``resolve_device`` turns a user's ``device = "USB"`` or ``device = 3`` into a
PortAudio index: an index, an exact name, or a unique case-insensitive part of a name.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any, Literal

from assistant.errors import AssistantError, AudioDeviceError

Kind = Literal["input", "output"]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One device as a backend sees it."""

    backend: str
    """``portaudio`` or ``pulse``."""
    index: int
    name: str
    inputs: int
    """Input channels (0: not a microphone)."""
    outputs: int
    """Output channels (0: not a speaker)."""
    default_rate: int
    """The device's own sample rate, in Hz."""
    is_default: bool = False
    detail: str = ""
    """Host API (PortAudio) or driver and state (PulseAudio)."""


@dataclass(frozen=True, slots=True)
class DeviceListing:
    devices: list[DeviceInfo] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """One line per backend that could not be listed, with the reason and the fix."""


def portaudio_devices() -> list[DeviceInfo]:
    """PortAudio's devices (as of PortAudio's initialisation in this process)."""
    from assistant.audio.portaudio import sounddevice

    sd = sounddevice()
    hostapis = sd.query_hostapis()
    defaults = set(sd.default.device)
    found: list[DeviceInfo] = []
    for info in sd.query_devices():
        found.append(
            DeviceInfo(
                "portaudio",
                int(info["index"]),
                str(info["name"]),
                int(info["max_input_channels"]),
                int(info["max_output_channels"]),
                int(info["default_samplerate"]),
                int(info["index"]) in defaults,
                str(hostapis[info["hostapi"]]["name"]),
            )
        )
    return found


def pulse_devices(server: str | None = None) -> list[DeviceInfo]:
    """PulseAudio sources (inputs) and sinks (outputs), as ``pactl list short`` shows them."""
    pactl = shutil.which("pactl")
    if pactl is None:
        raise AudioDeviceError("pactl not found: install pulseaudio-utils (Debian) or pulseaudio (Termux)")
    base = [pactl, *([f"--server={server}"] if server else [])]

    def ask(*args: str) -> str:
        try:
            done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise AudioDeviceError(f"pactl {' '.join(args)}: {err}") from err
        if done.returncode != 0:
            raise AudioDeviceError(f"no PulseAudio server: {done.stderr.strip() or done.returncode}")
        return done.stdout

    defaults = {}
    for line in ask("info").splitlines():
        key, _, value = line.partition(":")
        defaults[key.strip()] = value.strip()
    found: list[DeviceInfo] = []
    for kind, default in (("sources", "Default Source"), ("sinks", "Default Sink")):
        for line in ask("list", "short", kind).splitlines():
            parts = line.split("\t")
            if len(parts) < 4:
                continue
            spec = parts[3].split()
            channels = int(spec[1].rstrip("ch")) if len(spec) > 1 and spec[1].endswith("ch") else 1
            rate = int(spec[2].rstrip("Hz")) if len(spec) > 2 and spec[2].endswith("Hz") else 0
            inputs, outputs = (channels, 0) if kind == "sources" else (0, channels)
            state = parts[4] if len(parts) > 4 else ""
            found.append(
                DeviceInfo(
                    "pulse", int(parts[0]), parts[1], inputs, outputs, rate,
                    parts[1] == defaults.get(default), f"{parts[2]} {state}".strip(),
                )
            )  # fmt: skip
    return found


def list_devices(server: str | None = None) -> DeviceListing:
    """Every device of every backend that answers; why the others did not."""
    devices: list[DeviceInfo] = []
    problems: list[str] = []
    for backend, lister in (("portaudio", portaudio_devices), ("pulse", lambda: pulse_devices(server))):
        try:
            devices.extend(lister())
        except AssistantError as err:
            problems.append(f"{backend}: {err.message}")
    return DeviceListing(devices, problems)


def resolve_device(spec: str | int | None, kind: Kind, devices: list[DeviceInfo] | None = None) -> int | None:
    """A PortAudio device index for ``spec`` (None or "" or "default": the default device).

    Raises ``AudioDeviceError`` (``audio_device_missing``) naming the candidates when nothing or
    more than one device matches; the live backends treat that as a device to wait for.
    """
    if spec is None or spec == "" or spec == "default":
        return None
    pool = devices if devices is not None else portaudio_devices()
    usable = [d for d in pool if (d.inputs if kind == "input" else d.outputs) > 0]
    names = ", ".join(f"{d.index}: {d.name}" for d in usable) or "none"
    if isinstance(spec, int) or str(spec).strip().isdigit():
        index = int(spec)
        if any(d.index == index for d in usable):
            return index
        raise AudioDeviceError(f"no {kind} device with index {index}; {kind} devices: {names}")
    text = str(spec)
    exact = [d for d in usable if d.name == text]
    matches = exact or [d for d in usable if text.lower() in d.name.lower()]
    if len(matches) == 1:
        return matches[0].index
    if not matches:
        raise AudioDeviceError(f"no {kind} device named {text!r}; {kind} devices: {names}")
    raise AudioDeviceError(
        f"{text!r} matches several {kind} devices ({names}); give the index or the full name"
    )


def describe(info: Any) -> str:
    """One line for ``assistant devices``."""
    if not isinstance(info, DeviceInfo):
        return str(info)
    io = "/".join(
        p
        for p in (f"in {info.inputs}" if info.inputs else "", f"out {info.outputs}" if info.outputs else "")
        if p
    )
    mark = "*" if info.is_default else " "
    return (
        f"{mark} {info.backend:9} {info.index:3} {info.name}  ({io}, {info.default_rate} Hz, {info.detail})"
    )
