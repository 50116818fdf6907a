"""``assistant doctor`` on real parts: a private PulseAudio server, a real broker, real folders.

Healthy: the virtual microphone (a null sink's monitor, with a tone played into it) and speaker,
the default models present: every finding ok, exit 0. Broken: a missing or corrupt model, a
missing audio device, no sound server, digital silence, the broker down or refusing us, an
unwritable folder, ALSA nodes this user cannot open; each with its fix. And where every setting
came from: default, the pipeline file, an environment variable, the command line.
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant import cli
from assistant.audio.pulse import PulseSink, PulseSource
from assistant.config import Config, LlmConfig, MqttConfig
from assistant.doctor import (
    MQTT_URL_KEYS,
    Finding,
    Setup,
    check_broker,
    check_dirs,
    check_input,
    check_models,
    check_output,
    exit_code,
)
from assistant.mqtt.protocol import config_from_url

from .conftest import write_wav
from .mosquitto import Broker, free_port, running_broker
from .pulse import PulseServer, pulse_fixture  # noqa: F401 - the ``pulse`` fixture
from .test_audio_portaudio import portaudio_or_skip

TONE_AMPLITUDE = 0.25
"""A sine at this peak has an RMS of -15.1 dBFS (0.25 / sqrt 2)."""


def doctor(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """``assistant ... doctor --json``: (exit code, the parsed report)."""
    code = cli.main([*argv[: argv.index("doctor")], "doctor", "--json", *argv[argv.index("doctor") + 1 :]])
    return code, json.loads(capsys.readouterr().out)


def levels(report: dict[str, Any], check: str) -> list[str]:
    return [f["level"] for f in report["findings"] if f["check"] == check]


def tone(tmp: Path, seconds: float = 30.0) -> Path:
    t = np.arange(int(seconds * 16_000)) / 16_000
    return write_wav(tmp / "tone.wav", TONE_AMPLITUDE * 32767 * np.sin(2 * np.pi * 440 * t), 16_000)


def pulse_input(device: str | None, **setup: Any) -> Setup:
    return Setup(input=f"pulse:{device}", open_source=lambda cb: PulseSource(device, on_state=cb), **setup)


# ------------------------------------------------------------------------------------------ healthy


def test_a_healthy_setup_is_all_ok_and_exits_0(
    pulse: PulseServer, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    player = pulse.play(tone(tmp_path))  # someone talks into the (virtual) microphone
    try:
        code = cli.main(["--model-dir", str(model_dir), "doctor", "--report", str(tmp_path / "turns.jsonl")])
    finally:
        player.kill()
        player.wait(10)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert code == 0, out
    assert lines and all(line.startswith("OK   ") for line in lines), out
    checks = {line.split()[1] for line in lines}
    assert {"models:", "input:", "output:", "dirs:", "mqtt:"} <= checks
    (mic,) = [line for line in lines if line.startswith("OK   input:")]
    assert "pulse source mic.monitor (default)" in mic and "0.5 s captured" in mic
    rms = float(mic.split("level ")[1].split(" dBFS")[0])
    assert abs(rms - 20 * math.log10(TONE_AMPLITUDE / math.sqrt(2))) < 3.0, mic
    assert any("pulse sink spk (default)" in line and "playing" in line for line in lines), out
    assert sum("sha256 verified" in line for line in lines) == 4  # ASR, LLM, TTS, the turn model
    assert any(f"report folder {tmp_path} is writable" in line for line in lines), out


# ------------------------------------------------------------------------------------------- audio


async def test_digital_silence_warns_with_a_fix_for_the_platform(pulse: PulseServer) -> None:
    (linux,) = await check_input(pulse_input("mic.monitor"))  # nothing plays into the null sink
    assert linux.level == "warn" and "digital silence" in linux.message and "mic.monitor" in linux.message
    assert "set-source-mute" in linux.fix
    (termux,) = await check_input(pulse_input("mic.monitor", environ={"TERMUX_VERSION": "0.118.1"}))
    assert termux.level == "warn" and "Termux:API" in termux.fix and "module-sles-source" in termux.fix
    assert exit_code([linux]) == 0 and exit_code([linux], strict=True) == 1  # a warning, not broken


async def test_a_missing_audio_device_fails_with_the_devices_to_choose_from(pulse: PulseServer) -> None:
    (mic,) = await check_input(pulse_input("no-such-mic"))
    assert mic.level == "fail" and mic.message.startswith("[audio_device_missing] pulse source no-such-mic")
    assert "No such entity" in mic.message
    assert "assistant devices" in mic.fix and "mic.monitor" in mic.fix and "pulse:NAME" in mic.fix
    speaker = Setup(
        output="pulse:no-such-speaker", open_sink=lambda cb: PulseSink("no-such-speaker", on_state=cb)
    )
    (out,) = await check_output(speaker)
    assert (
        out.level == "fail" and "[audio_device_missing]" in out.message and "no-such-speaker" in out.message
    )
    assert "--output pulse:NAME" in out.fix and "spk" in out.fix
    assert "\x1b" not in out.message  # pacat's terminal codes are not passed on


def test_portaudio_devices_are_captured_and_a_missing_one_named(
    pulse: PulseServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    portaudio_or_skip()
    from assistant.audio.devices import portaudio_devices

    if not any(d.name == "pulse" for d in portaudio_devices()):
        pytest.skip("PortAudio has no ALSA 'pulse' device (apt-get install libasound2-plugins)")
    player = pulse.play(tone(tmp_path))
    try:
        code, report = doctor(capsys, "doctor", "--input", "portaudio:pulse", "--output", "portaudio:pulse")
    finally:
        player.kill()
        player.wait(10)
    found = {f["check"]: f for f in report["findings"]}
    assert found["input"]["level"] == "ok", found["input"]
    assert found["input"]["message"].startswith("portaudio input device pulse, ")
    rms = float(found["input"]["message"].split("level ")[1].split(" dBFS")[0])
    assert abs(rms - 20 * math.log10(TONE_AMPLITUDE / math.sqrt(2))) < 3.0
    assert found["output"]["level"] == "ok" and found["permissions"]["level"] == "ok"
    _, report = doctor(capsys, "doctor", "--input", "portaudio:no-such-mic", "--output", "-")
    (mic,) = [f for f in report["findings"] if f["check"] == "input"]
    assert mic["level"] == "fail" and "no input device named 'no-such-mic'" in mic["message"]
    assert "--input portaudio:NAME or portaudio:INDEX" in mic["fix"]


async def test_no_sound_server_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if shutil.which("parec") is None:
        pytest.skip("parec is not installed (apt-get install pulseaudio-utils)")
    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path}/no-server")
    (linux,) = await check_input(pulse_input(None))
    assert linux.level == "fail" and "Connection refused" in linux.message
    assert "pulseaudio --start" in linux.fix and "portaudio" in linux.fix
    (termux,) = await check_input(pulse_input(None, environ={"PREFIX": "/data/data/com.termux/files/usr"}))
    assert "--load=module-sles-source" in termux.fix


async def test_an_input_file_is_read_and_a_missing_one_fails(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "q.wav", np.zeros(8000, dtype=np.int16), 16_000)
    (ok,) = await check_input(Setup(input=str(wav)))
    assert ok.level == "ok" and "0.5 s of audio" in ok.message
    (missing,) = await check_input(Setup(input=str(tmp_path / "nope.wav")))
    assert missing.level == "fail" and missing.message.startswith("[audio_invalid]") and missing.fix
    (none,) = await check_input(Setup(input=None))  # run would refuse to start
    assert none.level == "fail" and none.message.startswith("[config_invalid]") and "--mqtt" in none.fix


# ------------------------------------------------------------------------------------------ models


def test_a_missing_model_fails_with_the_exact_pull_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    code, report = doctor(capsys, "--model-dir", str(models), "doctor", "--input", "-", "--output", "-")
    assert code == 1
    found = [f for f in report["findings"] if f["check"] == "models"]
    failed = {f["message"].split()[1]: f for f in found if f["level"] == "fail"}
    assert set(failed) == {"asr.model", "llm.model", "tts.voice"}
    (turn,) = [f for f in found if f["level"] == "warn"]  # the daemon runs without the turn model
    assert "vad.turn_model" in turn["message"] and "transcript alone" in turn["message"]
    for finding in failed.values():
        name = finding["message"].split()[3]
        assert finding["level"] == "fail" and finding["message"].startswith("[model_missing]")
        assert finding["fix"] == f"assistant --model-dir {models} models pull {name}"
    cli.main(["--model-dir", str(models), "doctor", "--input", "-", "--output", "-"])
    text = capsys.readouterr().out
    assert f"FAIL models: [model_missing] asr.model = whisper-tiny.en is not downloaded ({models}/" in text
    assert f"\n     fix: assistant --model-dir {models} models pull whisper-tiny.en\n" in text


async def test_a_corrupt_model_and_a_wrong_role_fail(tmp_path: Path) -> None:
    voice = tmp_path / "piper-en_US-joe-medium"
    voice.mkdir()
    (voice / "en_US-joe-medium.onnx").write_bytes(b"<html>not a model</html>")
    config = Config(asr=replace(Config().asr, model="piper-en_US-joe-medium"), llm=LlmConfig(engine="openai"))
    findings = await check_models(Setup(config=config, model_dir=tmp_path, pull="PULL"))
    asr, tts, turn, llm = findings
    assert turn.level == "warn" and "vad.turn_model" in turn.message
    assert asr.level == "fail" and "is a tts model, not asr" in asr.message and "whisper-tiny.en" in asr.fix
    assert tts.level == "fail" and tts.message.startswith("[model_missing]")  # the .onnx.json is absent
    assert tts.fix == "PULL piper-en_US-joe-medium"
    assert llm.level == "ok" and "openai" in llm.message  # no local LLM model needed
    (voice / "en_US-joe-medium.onnx.json").write_text("{}")
    _, tts, _, _ = await check_models(Setup(config=config, model_dir=tmp_path, pull="PULL"))
    assert tts.level == "fail" and tts.message.startswith("[model_corrupt]") and "size" in tts.message


# ------------------------------------------------------------------------------------------ broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running_broker(tmp_path)


def mqtt_setup(url: str, **mqtt: Any) -> Setup:
    return Setup(config=Config(mqtt=replace(config_from_url(url, MqttConfig()), **mqtt)))


async def test_the_broker_is_connected_to_or_the_failure_explained(broker: Broker, tmp_path: Path) -> None:
    (ok,) = await check_broker(mqtt_setup(broker.url()))
    assert ok.level == "ok" and ok.message == f"connected to mqtt://127.0.0.1:{broker.port}"
    assert await check_broker(Setup()) == []  # MQTT off: nothing to connect to
    (down,) = await check_broker(mqtt_setup(f"mqtt://127.0.0.1:{free_port()}"))
    assert down.level == "fail" and "connection refused" in down.message
    assert "start the broker" in down.fix

    (tmp_path / "auth").mkdir()
    closed = Broker(tmp_path / "auth", users={"assistant": "right"})
    closed.start()
    try:
        (refused,) = await check_broker(mqtt_setup(closed.url("assistant", "wrong")))
        assert refused.level == "fail" and "refused user 'assistant'" in refused.message
        assert "mqtt.password" in refused.fix and "mosquitto_passwd" in refused.fix
        (ok,) = await check_broker(mqtt_setup(closed.url("assistant", "right")))
        assert ok.level == "ok" and ok.message.endswith("as assistant")
    finally:
        closed.kill()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_an_untrusted_broker_certificate_names_the_ca_setting(tmp_path: Path) -> None:
    """(paho leaks the socket of a failed TLS handshake; collected here, so the warning is ours.)"""
    secure = Broker(tmp_path, tls=True)
    secure.start()
    try:
        url = f"mqtts://127.0.0.1:{secure.port}"
        (untrusted,) = await check_broker(mqtt_setup(url))
        assert (
            untrusted.level == "fail"
            and "not trusted" in untrusted.message
            and "tls_ca_file" in untrusted.fix
        )
        (ok,) = await check_broker(mqtt_setup(url, tls_ca_file=str(secure.ca)))
        assert ok.level == "ok" and ok.message.startswith("connected to mqtts://")
    finally:
        secure.kill()
        gc.collect()


def test_broker_down_makes_doctor_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    code, report = doctor(capsys, "--model-dir", str(tmp_path), "doctor", "--mqtt", url)
    assert code == 1 and levels(report, "broker") == ["fail"]
    assert levels(report, "input") == ["ok"]  # MQTT on, no --input: no microphone, as run does it


# ------------------------------------------------------------------------------------- folders


def _as_other_user(script: str) -> dict[str, Any]:
    """Run ``script`` (prints JSON) as an unprivileged user: root writes anywhere."""
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    if prefix and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop privileges")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/nonexistent"}
    done = subprocess.run(
        [*prefix, sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env,
        cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary folder another user can enter (pytest's tmp_path is private to its user)."""
    path = Path(tempfile.mkdtemp(prefix="doctor-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for sub in path.rglob("*"):
            if sub.is_dir():
                sub.chmod(0o755)
        shutil.rmtree(path)


def test_an_unwritable_model_dir_fails(shared_tmp: Path) -> None:
    models, state = shared_tmp / "models", shared_tmp / "state"
    models.mkdir(mode=0o555)
    models.chmod(0o555)
    state.mkdir(mode=0o555)
    state.chmod(0o555)
    report = _as_other_user(
        "import asyncio, json; from pathlib import Path\n"
        "from assistant.config import Config, LlmConfig\n"
        "from assistant.doctor import Setup, check_dirs\n"
        f"setup = Setup(config=Config(llm=LlmConfig(state_cache={str(state)!r})),"
        f" model_dir=Path({str(models)!r}), report={str(shared_tmp / 'r' / 'turns.jsonl')!r},"
        f" environ={{'STATE_DIRECTORY': {str(shared_tmp)!r}}})\n"
        "print(json.dumps([f.__str__() for f in asyncio.run(check_dirs(setup))]))\n"
    )
    model_line, state_line, systemd_line, report_line = report
    assert model_line.startswith(f"FAIL dirs: model folder {models} is not writable (")
    assert "Permission denied" in model_line and f"fix: sudo chown -R nobody {models}" in model_line
    assert state_line.startswith(f"WARN dirs: llm state folder {state} is not writable")
    assert systemd_line.startswith("FAIL dirs: $STATE_DIRECTORY")  # root's 0755 folder
    assert report_line.startswith(f"FAIL dirs: report folder {shared_tmp / 'r'} is not writable")


async def test_writable_folders_are_ok_and_missing_ones_will_be_created(tmp_path: Path) -> None:
    setup = Setup(model_dir=tmp_path / "new" / "models", config=Config(llm=LlmConfig(warm=False)))
    assert await check_dirs(setup) == [
        Finding("dirs", "ok", f"model folder {tmp_path / 'new' / 'models'} is writable")
    ]
    (tmp_path / "file").write_text("")
    (bad,) = await check_dirs(replace(setup, model_dir=tmp_path / "file" / "models"))
    assert bad.level == "fail" and "is not a folder" in bad.message


def test_alsa_nodes_this_user_cannot_open_fail_with_the_audio_group_fix(shared_tmp: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    snd = shared_tmp / "snd"
    snd.mkdir(mode=0o755)
    os.mknod(snd / "controlC0", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # root's, like a box's ALSA nodes
    report = _as_other_user(
        "import asyncio, json; from pathlib import Path\n"
        "from assistant.doctor import Setup, check_permissions\n"
        f"found = asyncio.run(check_permissions(Setup(input='portaudio'), snd=Path({str(snd)!r})))\n"
        "print(json.dumps([str(f) for f in found]))\n"
    )
    (line,) = report
    assert line.startswith("FAIL permissions: user nobody (not in the audio group) cannot open 1 of 1 ALSA")
    assert "fix: sudo usermod -aG audio nobody" in line


# ------------------------------------------------------------------------------------------ config


def rows(report: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    return {row["key"]: (row["value"], row["source"]) for row in report["config"]}


def test_each_setting_says_where_it_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = tmp_path / "mine.toml"
    pipeline.write_text('[asr]\nmodel = "whisper-base"\n[mqtt]\nsite = "kitchen"\n')
    monkeypatch.setenv("ASSISTANT_MODEL_DIR", str(tmp_path / "env-models"))
    url = f"mqtt://me:secret@127.0.0.1:{free_port()}"
    args = ["--pipeline", str(pipeline), "doctor", "--input", "-", "--mqtt", url]
    _, report = doctor(capsys, *args)
    got = rows(report)
    assert report["pipeline"] == str(pipeline.resolve())
    assert got["pipeline"] == (str(pipeline.resolve()), "cli --pipeline")
    assert got["asr.model"] == ("whisper-base", "file") and got["mqtt.site"] == ("kitchen", "file")
    assert got["asr.language"] == ("en", "default")
    assert got["model_dir"] == (str(tmp_path / "env-models"), "env ASSISTANT_MODEL_DIR")
    assert got["mqtt.host"] == ("127.0.0.1", "cli --mqtt") and got["mqtt.username"] == ("me", "cli --mqtt")
    assert got["mqtt.password"] == ("***", "cli --mqtt")  # never shown
    assert got["input"] == ("-", "cli --input") and got["output"] == (None, "default")
    assert len(got) == len(report["config"])  # one row per key

    _, report = doctor(capsys, "--model-dir", str(tmp_path / "cli-models"), *args)
    assert rows(report)["model_dir"] == (str(tmp_path / "cli-models"), "cli --model-dir")
    pipeline.write_text(f"model_dir = {str(tmp_path / 'file-models')!r}\n")
    _, report = doctor(capsys, *args)
    assert rows(report)["model_dir"] == (str(tmp_path / "file-models"), "file")
    monkeypatch.delenv("ASSISTANT_MODEL_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    _, report = doctor(capsys, "doctor", "--input", "-")
    assert rows(report)["model_dir"][1] == "default" and rows(report)["asr.model"][1] == "file"

    cli.main(["--pipeline", str(pipeline), "doctor", "--input", "-", "--config"])
    text = capsys.readouterr().out
    assert f"\nconfig (file: {pipeline.resolve()}):\n" in text
    assert any(
        line.split()[:3] == ["asr.model", '"whisper-tiny.en"', "default"] for line in text.splitlines()
    )


def test_the_keys_mqtt_url_replaces_are_the_ones_shown_as_cli() -> None:
    base = MqttConfig()
    given = config_from_url("mqtts://user:pass@broker.lan:8884", base)
    changed = {key for key in vars(base) if getattr(given, key) != getattr(base, key)}
    assert changed == set(MQTT_URL_KEYS)
