"""What every check shares: ``Finding``, ``Setup`` (what is checked) and a folder probe."""

from __future__ import annotations

import os
import pwd
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assistant.config import Config

if TYPE_CHECKING:
    from assistant.audio.live import StateCallback
    from assistant.audio.sinks import AudioSink
    from assistant.audio.sources import AudioSource

LEVELS = ("ok", "warn", "fail")


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    level: str
    """``ok``, ``warn`` or ``fail``."""
    message: str
    fix: str = ""
    """What to do about a ``warn`` or ``fail``: a command where there is one."""

    def __str__(self) -> str:
        line = f"{self.level.upper():4} {self.check}: {self.message}"
        return f"{line}\n     fix: {self.fix}" if self.fix else line


@dataclass(frozen=True, slots=True)
class ConfigRow:
    """One effective setting and where it came from."""

    key: str
    value: Any
    source: str
    """``default``, ``file`` (the pipeline TOML), ``env NAME`` or ``cli --OPTION``."""


@dataclass(frozen=True)
class Setup:
    """What ``doctor`` checks: the daemon's config and how ``run`` would be started with it."""

    config: Config = field(default_factory=Config)
    model_dir: Path = field(default_factory=lambda: _default_model_dir())
    """The model cache ``run`` loads from."""
    input: str | None = None
    """``--input`` as ``run`` takes it; None: no microphone (an MQTT-only daemon)."""
    output: str | None = None
    """``--output`` as ``run`` takes it; None: no speaker."""
    report: str | None = None
    """``--report`` file, if any."""
    open_source: Callable[[StateCallback], AudioSource] | None = None
    """Opens ``input`` the way ``run`` does, when it is a live device."""
    open_sink: Callable[[StateCallback], AudioSink | None] | None = None
    """Opens ``output`` the way ``run`` does, when it is a live device."""
    pull: str = "assistant models pull"
    """The command that fetches a model into ``model_dir`` (with ``--model-dir`` when given)."""
    pipeline: Path | None = None
    """The pipeline TOML file the config came from."""
    rows: tuple[ConfigRow, ...] = ()
    """The effective config with sources (``doctor --config``)."""
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    capture_s: float = 0.5
    """Length of the test capture, in seconds."""

    @property
    def termux(self) -> bool:
        """Running in Termux on Android."""
        return "TERMUX_VERSION" in self.environ or "com.termux" in self.environ.get("PREFIX", "")


def _default_model_dir() -> Path:
    from assistant.models.store import default_model_dir

    return default_model_dir()


Check = Callable[[Setup], Awaitable[list[Finding]]]


def unwritable(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (made first if missing), or None when they can.

    Creates and removes a scratch file, so ACLs, read-only mounts and root all count as they
    would for the daemon. Blocking: call through ``asyncio.to_thread``.
    """
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return f"{folder}: no existing parent folder"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    try:
        fd, name = tempfile.mkstemp(prefix=".assistant-doctor-", dir=probe)
    except OSError as err:
        return f"{probe}: {err.strerror or err}"
    os.close(fd)
    os.unlink(name)
    return None


def folder_of(file: str) -> Path:
    """The folder a file given on the command line goes into."""
    return Path(file).expanduser().absolute().parent


def user_name() -> str:
    """The user whose permissions count (the effective one, whatever ``$USER`` says)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def chown_fix(folder: Path) -> str:
    """How to give the folder to the user running the daemon."""
    return f"sudo chown -R {user_name()} {folder}, or choose another folder"
