"""Timers: which run, which are due, and the file that keeps them across restarts.

Pure: every method that needs the time takes ``now`` (seconds since the epoch: ``time.time()`` in
the daemon, a fake clock in tests); nothing here sleeps or reads a clock. The task that waits for
them and rings is ``alarms.TimerKeeper``.

A timer is kept as when it started and how long it runs, in wall-clock time, so it survives a
restart. The file is JSON, rewritten whole after every change (a temporary file renamed over the
old one, so a crash leaves the old file or the new, never half of one):

    {"version": 1, "next_id": 4, "timers": [{"id": 3, "seconds": 600.0, "started_at": 1767...,
     "name": "pasta"}]}
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import platformdirs

_LOGGER = logging.getLogger(__name__)

FILE_VERSION = 1
MAX_TIMER_S = 24 * 3600.0
"""The longest timer, seconds (the sentences allow up to 100 hours; a day is plenty)."""


def duration_label(seconds: float) -> str:
    """How a timer of this length is named: "10 minute", "1 hour 30 minute", "45 second"."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v} {unit}" for v, unit in ((hours, "hour"), (minutes, "minute"), (secs, "second")) if v]
    return " ".join(parts) or "0 second"


def same_name(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


@dataclass(frozen=True)
class Timer:
    """One timer."""

    id: int
    seconds: float
    """How long it runs, as asked."""
    started_at: float
    """When it was started, seconds since the epoch."""
    name: str = ""

    @property
    def ends_at(self) -> float:
        return self.started_at + self.seconds

    def left(self, now: float) -> float:
        """Seconds to go (0 once it has ended)."""
        return max(0.0, self.ends_at - now)

    @property
    def label(self) -> str:
        """How it is spoken of: its name ("pasta"), else its length ("10 minute")."""
        return self.name or duration_label(self.seconds)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Timer:
        return cls(
            int(data["id"]), float(data["seconds"]), float(data["started_at"]), str(data.get("name", ""))
        )


class Timers:
    """The running timers, soonest first."""

    def __init__(self, timers: Iterable[Timer] = (), next_id: int = 1) -> None:
        self._timers = {timer.id: timer for timer in timers}
        self.next_id = max([next_id, *(t.id + 1 for t in self._timers.values())])

    def __len__(self) -> int:
        return len(self._timers)

    def start(self, now: float, seconds: float, name: str = "") -> Timer:
        """A new timer of ``seconds`` (1 s to ``MAX_TIMER_S``), from ``now``."""
        seconds = min(max(1.0, seconds), MAX_TIMER_S)
        timer = Timer(self.next_id, seconds, now, name.strip())
        self.next_id += 1
        self._timers[timer.id] = timer
        return timer

    def running(self) -> list[Timer]:
        return sorted(self._timers.values(), key=lambda t: (t.ends_at, t.id))

    def find(self, *, name: str | None = None, seconds: float | None = None) -> list[Timer]:
        """Timers called ``name`` (case and spacing aside) and/or started for ``seconds``; with
        neither, all of them."""
        return [
            t
            for t in self.running()
            if (name is None or same_name(t.name, name))
            and (seconds is None or abs(t.seconds - seconds) < 0.5)
        ]

    def remove(self, ids: Iterable[int]) -> list[Timer]:
        """Cancel these timers; returns those that were running."""
        return [timer for i in ids if (timer := self._timers.pop(i, None)) is not None]

    def due(self, now: float) -> list[Timer]:
        """Take out and return the timers that have ended by ``now``, in the order they ended."""
        ended = [t for t in self.running() if t.ends_at <= now]
        return self.remove(t.id for t in ended)

    def next_end(self) -> float | None:
        """When the soonest timer ends (epoch seconds), or None."""
        soonest = self.running()
        return soonest[0].ends_at if soonest else None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FILE_VERSION,
            "next_id": self.next_id,
            "timers": [t.to_json() for t in self.running()],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Timers:
        if data.get("version") != FILE_VERSION:
            raise ValueError(f"unknown timers file version {data.get('version')!r}")
        return cls((Timer.from_json(t) for t in data.get("timers", [])), int(data.get("next_id", 1)))


def default_timers_path(environ: Mapping[str, str] | None = None) -> Path:
    """``timers.json`` in the state folder: systemd's ``$STATE_DIRECTORY`` (its first entry) when
    the service has one, else the user's (``~/.local/state/assistant``)."""
    env = os.environ if environ is None else environ
    given = env.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(given or platformdirs.user_state_dir("assistant")) / "timers.json"


def load_timers(path: Path) -> Timers:
    """The timers kept in ``path``; none when it does not exist. A file that cannot be read is
    set aside (``.bad``) and logged: a broken file must not stop the assistant."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Timers()
    except OSError as err:
        _LOGGER.error("timers: cannot read %s: %s; starting without timers", path, err)
        return Timers()
    try:
        return Timers.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as err:
        bad = path.with_suffix(path.suffix + ".bad")
        _LOGGER.error("timers: %s is not a timers file (%s); moved to %s", path, err, bad)
        with contextlib.suppress(OSError):
            os.replace(path, bad)
        return Timers()


def save_timers(path: Path, timers: Timers) -> None:
    """Write the timers to ``path`` atomically (a temporary file beside it, renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(timers.to_json(), out, indent=1)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
