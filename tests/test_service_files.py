"""The service files: systemd units checked by ``systemd-analyze verify`` and for the directives
the service needs; the Termux scripts shell-checked and run against a simulated ``$PREFIX``
whose commands (termux-wake-lock, sv, svlogd, assistant, ...) are stubs that record their calls.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "systemd"
UNITS = {"user": SYSTEMD / "assistant.service", "system": SYSTEMD / "assistant-system.service"}
TERMUX = SYSTEMD / "termux"
RUN = TERMUX / "sv" / "assistant" / "run"
LOG_RUN = TERMUX / "sv" / "assistant" / "log" / "run"
BOOT = TERMUX / "boot" / "start-assistant"
SCRIPTS = [RUN, LOG_RUN, BOOT]


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values...]}}`` of a unit file (comments and blank lines skipped)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _runnable_copy(unit: Path, tmp_path: Path) -> Path:
    """The unit with ExecStart's program replaced by this venv's ``assistant`` (verify checks it exists)."""
    program = Path(sys.executable).parent / "assistant"
    if not program.exists():
        program = Path(sys.executable)
    lines = []
    for line in unit.read_text().splitlines():
        if line.startswith("ExecStart="):
            line = f"ExecStart={program} " + line.split(" ", 1)[1]
        lines.append(line)
    copy = tmp_path / unit.name
    copy.write_text("\n".join(lines) + "\n")
    return copy


@pytest.mark.parametrize("kind", ["user", "system"])
def test_units_pass_systemd_analyze_verify(kind: str, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is absent (Debian/Ubuntu: apt-get install -y systemd)")
    unit = _runnable_copy(UNITS[kind], tmp_path)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_LEVEL": "warning"}
    args = ["systemd-analyze", *(["--user"] if kind == "user" else []), "verify", str(unit)]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert unit.name not in output, output  # no "Unknown key", no bad values


@pytest.mark.parametrize("kind", ["user", "system"])
def test_units_have_the_service_directives(kind: str) -> None:
    unit = parse_unit(UNITS[kind])
    service, section = unit["Service"], unit["Unit"]
    assert service["Type"] == ["notify"] and service["NotifyAccess"] == ["main"]
    assert service["Restart"] == ["on-failure"]
    assert int(service["WatchdogSec"][0]) >= 10
    assert int(service["TimeoutStartSec"][0]) >= 300  # READY=1 only after the models load
    assert int(section["StartLimitIntervalSec"][0]) > 0 and int(section["StartLimitBurst"][0]) > 0
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "PrivateDevices" not in service  # it would hide /dev/snd
    assert service["StateDirectory"] == ["assistant"] and service["CacheDirectory"] == ["assistant"]
    env = dict(item.split("=", 1) for item in service["Environment"])
    cache = "%C/assistant" if kind == "user" else "/var/cache/assistant"
    assert env["ASSISTANT_MODEL_DIR"].startswith(cache + "/")
    assert service["NoNewPrivileges"] == ["yes"] and service["ProtectSystem"] == ["strict"]
    assert service["ProtectHome"] == ["read-only"]
    assert set(service["RestrictAddressFamilies"][0].split()) >= {"AF_UNIX", "AF_INET", "AF_INET6"}
    if kind == "system":
        assert service["SupplementaryGroups"] == ["audio"]
        assert "char-alsa rw" in service["DeviceAllow"]
        assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    else:
        assert unit["Install"]["WantedBy"] == ["default.target"]
        assert cache in service["ReadWritePaths"][0]


@pytest.mark.parametrize("kind", ["user", "system"])
def test_exec_start_is_a_valid_assistant_run(kind: str) -> None:
    service = parse_unit(UNITS[kind])["Service"]
    env = dict(item.split("=", 1) for item in service["Environment"])
    argv = shlex.split(service["ExecStart"][0])
    assert argv[0].endswith("/bin/assistant")
    words = [env["ASSISTANT_PIPELINE"] if a == "${ASSISTANT_PIPELINE}" else a for a in argv[1:]]
    words = [a for a in words if a != "$ASSISTANT_ARGS"]  # empty by default: no words
    args = build_parser().parse_args(words)
    assert args.command == "run" and args.pipeline == "default"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(TERMUX)))
def test_termux_scripts_are_posix_sh_for_termux(script: Path) -> None:
    assert script.read_text().startswith("#!/data/data/com.termux/files/usr/bin/sh\n")
    assert os.access(script, os.X_OK)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is absent (Debian/Ubuntu: apt-get install -y shellcheck)")
    done = subprocess.run(
        ["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


STUB = """#!/bin/sh
echo "{name} $*" >> "$CALLS"
{extra}
"""


def _stub(directory: Path, name: str, extra: str = "") -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STUB.format(name=name, extra=extra))
    path.chmod(0o755)
    return path


@pytest.fixture()
def termux(tmp_path: Path) -> dict[str, Path]:
    """A simulated Termux: $PREFIX/bin with recording stubs, $HOME, a calls log."""
    prefix, home = tmp_path / "usr", tmp_path / "home"
    bin_dir = prefix / "bin"
    _stub(bin_dir, "termux-wake-lock")
    _stub(bin_dir, "sv-enable")
    _stub(bin_dir, "svlogd", 'echo "pid $$" >> "$CALLS"')
    # `sv up` fails once (runsvdir not there yet), then works; `sleep` returns at once.
    _stub(bin_dir, "sv", '[ -e "$CALLS.sv" ] && exit 0; touch "$CALLS.sv"; exit 1')
    _stub(bin_dir, "sleep")
    _stub(bin_dir, "pulseaudio", '[ "$1" = --check ] && exit 1; exit 0')
    (prefix / "etc").mkdir()
    (prefix / "etc" / "profile").write_text('echo "profile" >> "$CALLS"\n')
    service = prefix / "var" / "service" / "assistant"
    service.mkdir(parents=True)
    (service / "down").touch()
    return {"prefix": prefix, "home": home, "bin": bin_dir, "calls": tmp_path / "calls"}


def _run(script: Path, termux: dict[str, Path]) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    env = {
        "PATH": f"{termux['bin']}:/usr/bin:/bin",
        "PREFIX": str(termux["prefix"]),
        "HOME": str(termux["home"]),
        "CALLS": str(termux["calls"]),
    }
    with subprocess.Popen(
        ["sh", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        out, err = proc.communicate(timeout=30)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    calls = termux["calls"].read_text().splitlines() if termux["calls"].exists() else []
    return done, [line.replace(f"pid {proc.pid}", "pid SCRIPT") for line in calls]


def test_boot_script_takes_the_wake_lock_first_then_starts_the_service(termux: dict[str, Path]) -> None:
    done, calls = _run(BOOT, termux)
    assert done.returncode == 0, done.stderr
    assert calls == [
        "termux-wake-lock ",  # first, before anything can be suspended
        "profile",  # Termux's profile starts runsvdir (termux-services)
        "sv-enable assistant",
        "sv up assistant",  # runsvdir has not picked the service up yet: retried
        "sleep 1",
        "sv up assistant",
    ]
    assert not (termux["prefix"] / "var" / "service" / "assistant" / "down").exists()


def test_boot_script_without_the_service_installed_fails_clearly(termux: dict[str, Path]) -> None:
    shutil.rmtree(termux["prefix"] / "var" / "service" / "assistant")
    done, calls = _run(BOOT, termux)
    assert done.returncode == 1 and "no service in" in done.stderr
    assert calls[0] == "termux-wake-lock "


ASSISTANT = """echo "pid $$" >> "$CALLS"
echo "env ASSISTANT_MODEL_DIR=$ASSISTANT_MODEL_DIR PYTHONUNBUFFERED=$PYTHONUNBUFFERED" >> "$CALLS"
echo "to stderr" >&2
"""


def test_run_script_execs_assistant_run_with_its_environment(termux: dict[str, Path]) -> None:
    home = termux["home"]
    _stub(home / "assistant" / ".venv" / "bin", "assistant", ASSISTANT)
    settings = home / ".config" / "assistant" / "assistant.env"
    settings.parent.mkdir(parents=True)
    settings.write_text('ASSISTANT_ARGS="--input - --fast"\n')
    done, calls = _run(RUN, termux)
    assert done.returncode == 0, done.stderr
    assert calls == [
        "pulseaudio --check",
        "pulseaudio --start --load=module-sles-source --exit-idle-time=-1",
        "assistant -v --pipeline default run --input - --fast",
        "pid SCRIPT",  # exec'd: runit supervises the daemon itself
        f"env ASSISTANT_MODEL_DIR={home}/.cache/assistant/models PYTHONUNBUFFERED=1",
    ]
    assert done.stdout == "to stderr\n" and done.stderr == ""  # one stream, for the log service


def test_run_script_finds_assistant_on_path_and_can_leave_pulseaudio_alone(termux: dict[str, Path]) -> None:
    _stub(termux["bin"], "assistant", ASSISTANT)
    settings = termux["home"] / ".config" / "assistant" / "assistant.env"
    settings.parent.mkdir(parents=True)
    settings.write_text("ASSISTANT_PULSE=0\nASSISTANT_PIPELINE=file\nASSISTANT_MODEL_DIR=/sdcard/models\n")
    done, calls = _run(RUN, termux)
    assert done.returncode == 0, done.stderr
    assert calls[:2] == ["assistant -v --pipeline file run --input mic --output speaker", "pid SCRIPT"]
    assert calls[2].startswith("env ASSISTANT_MODEL_DIR=/sdcard/models ")


def test_log_script_execs_svlogd_on_the_service_log_directory(termux: dict[str, Path]) -> None:
    done, calls = _run(LOG_RUN, termux)
    assert done.returncode == 0, done.stderr
    log_dir = termux["prefix"] / "var" / "log" / "sv" / "assistant"
    assert calls == [f"svlogd -tt {log_dir}", "pid SCRIPT"]
    assert log_dir.is_dir()
