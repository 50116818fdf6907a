"""A private PulseAudio server with null sinks ``mic`` and ``spk`` (see ../shared/TESTING.md).

The server runs in its own 0700 ``XDG_RUNTIME_DIR`` (exported to the test's environment, so
parec/pacat/paplay and PortAudio's ALSA ``pulse`` device find it) and is torn down after the
test. ``mic.monitor`` is the virtual microphone (play into ``mic``), ``spk`` the virtual speaker
(record ``spk.monitor``). Tests skip only when pulseaudio itself is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

TOOLS = ("pulseaudio", "pactl", "parec", "pacat", "paplay")


class PulseServer:
    """One private server; ``stop()``/``start()`` simulate a device that goes away and returns."""

    def __init__(self, runtime: Path) -> None:
        self.runtime = runtime
        self.env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(runtime),
            "PULSE_SERVER": f"unix:{runtime}/pulse/native",
        }

    def start(self) -> None:
        subprocess.run(
            [
                "pulseaudio", "-D", "--exit-idle-time=-1", "-n",
                "--load=module-native-protocol-unix",
                "--load=module-null-sink sink_name=mic",
                "--load=module-null-sink sink_name=spk",
            ],
            env=self.env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while self.pactl("info").returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("private pulseaudio did not come up")
            time.sleep(0.05)
        self.pactl("set-default-source", "mic.monitor")
        self.pactl("set-default-sink", "spk")

    def stop(self) -> None:
        pid_file = self.runtime / "pulse" / "pid"
        pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
        self.pactl("exit")
        if pid is not None:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.02)

    def pactl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10)

    def loopback(
        self, source: str = "spk.monitor", sink: str = "mic", latency_ms: int = 20, volume: str = "100%"
    ) -> None:
        """Route ``source`` into ``sink`` (``module-loopback``) at ``volume`` (pactl's: "50%" is
        -18 dB): by default the speaker into the microphone, as loud as it plays."""
        proc = self.pactl(
            "load-module", "module-loopback", f"source={source}", f"sink={sink}", f"latency_msec={latency_ms}"
        )
        if proc.returncode != 0:
            raise RuntimeError(f"module-loopback: {proc.stderr.strip()}")
        deadline = time.monotonic() + 5
        while not (streams := [line.split()[0] for line in self.pactl("list", "short", "sink-inputs")
                               .stdout.splitlines() if "module-loopback" in line]):  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError("module-loopback made no stream")
            time.sleep(0.05)
        for stream in streams:
            self.pactl("set-sink-input-volume", stream, volume)

    def play(self, wav: Path, device: str = "mic") -> subprocess.Popen[bytes]:
        """``paplay -d DEVICE WAV`` in the background (the caller waits on it)."""
        return subprocess.Popen(["paplay", "-d", device, "--latency-msec=20", str(wav)], env=self.env)

    def record(self, device: str = "spk.monitor", rate: int = 16_000) -> subprocess.Popen[bytes]:
        """``parec`` of DEVICE as 16-bit mono at RATE into a pipe; stop it with ``stop_recording``."""
        return subprocess.Popen(
            ["parec", "-d", device, f"--rate={rate}", "--channels=1", "--format=s16le", "--latency-msec=20"],
            env=self.env, stdout=subprocess.PIPE,
        )  # fmt: skip


def stop_recording(proc: subprocess.Popen[bytes]) -> np.ndarray:
    """Stop a ``record`` process and return what it recorded (int16)."""
    proc.terminate()
    data, _ = proc.communicate(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()
    return np.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2")


@pytest.fixture(name="pulse")
def pulse_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[PulseServer]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install pulseaudio pulseaudio-utils)")
    runtime = Path(tempfile.mkdtemp(prefix="pulse-"))
    runtime.chmod(0o700)
    server = PulseServer(runtime)
    server.start()
    for key in ("XDG_RUNTIME_DIR", "PULSE_SERVER"):
        monkeypatch.setenv(key, server.env[key])
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(runtime, ignore_errors=True)
