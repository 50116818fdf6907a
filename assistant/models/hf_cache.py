"""The Hugging Face cache layout, so files pulled from the hub are shared with other HF tools.

The layout is huggingface_hub's own (``huggingface_hub.constants.HF_HUB_CACHE``)::

    <cache>/models--{org}--{name}/
        blobs/<etag>                 the bytes (for LFS files the etag is the file's sha256)
        blobs/<etag>.incomplete      a download under way (resumed from where it stopped)
        refs/<revision>              the commit hash that ``revision`` (e.g. ``main``) pointed to
        snapshots/<commit>/<file>    a relative symlink to ``../../blobs/<etag>``

The cache is ``$HF_HUB_CACHE``, else ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else
``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``, as huggingface_hub resolves
it. Everything here works offline: resolving a file reads ``refs/`` and ``snapshots/`` only.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path, PurePosixPath

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment as huggingface_hub does."""
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env := os.environ.get(key):
            return Path(env).expanduser()
    if home := os.environ.get("HF_HOME"):
        return Path(home).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "huggingface" / "hub"


def repo_dir(cache: Path, repo: str) -> Path:
    """``<cache>/models--{org}--{name}``."""
    return cache / ("models--" + repo.replace("/", "--"))


def is_commit(revision: str) -> bool:
    return bool(_COMMIT.match(revision))


def commit_for(folder: Path, revision: str) -> str:
    """The commit ``revision`` points to here (``refs/<revision>``); the revision itself when it is a
    commit hash or no ref was written (a server that sent no ``X-Repo-Commit``)."""
    if is_commit(revision):
        return revision
    try:
        return (folder / "refs" / revision).read_text(encoding="utf-8").strip() or revision
    except OSError:
        return revision


def snapshot_file(cache: Path, repo: str, revision: str, file: str) -> Path:
    """Where ``file`` of ``repo`` at ``revision`` lives (it may not exist)."""
    folder = repo_dir(cache, repo)
    return folder / "snapshots" / commit_for(folder, revision) / PurePosixPath(file)


def normalize_etag(etag: str | None) -> str | None:
    """``W/"abc"`` -> ``abc``; None when there is none."""
    if not etag:
        return None
    return etag.removeprefix("W/").strip('"') or None


def link(folder: Path, blob: Path, revision: str, commit: str, file: str) -> Path:
    """Point ``snapshots/<commit>/<file>`` at ``blob`` (relative) and record ``refs/<revision>``."""
    target = folder / "snapshots" / commit / PurePosixPath(file)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(os.path.relpath(blob, target.parent))
    if revision != commit:
        refs = folder / "refs" / revision
        refs.parent.mkdir(parents=True, exist_ok=True)
        refs.write_text(commit, encoding="utf-8")
    return target


def incomplete_exists(folder: Path) -> bool:
    blobs = folder / "blobs"
    return blobs.is_dir() and any(blobs.glob("*.incomplete"))


def remove_files(folder: Path, snapshot_files: list[Path], incomplete: list[Path]) -> bool:
    """Delete these snapshot entries, the blobs no other snapshot entry points to, and these
    ``.incomplete`` files; then the snapshot folders left empty, and the whole repo folder when no
    snapshot is left (unless another download into it is under way). Returns True if anything was deleted."""
    removed = False
    snapshots = folder / "snapshots"
    for entry in snapshot_files:
        blob = entry.resolve() if entry.is_symlink() else None
        if entry.is_symlink() or entry.exists():
            entry.unlink()
            removed = True
        if blob is not None and blob.is_file() and not _referenced(snapshots, blob):
            blob.unlink()
        parent = entry.parent
        while parent != snapshots and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    for part in incomplete:
        if part.exists():
            part.unlink()
            removed = True
    left = snapshots.is_dir() and any(snapshots.iterdir())
    if folder.is_dir() and not left and not incomplete_exists(folder):
        shutil.rmtree(folder)  # refs and stray blobs of a repo nothing points into any more
    return removed


def _referenced(snapshots: Path, blob: Path) -> bool:
    if not snapshots.is_dir():
        return False
    return any(p.is_symlink() and p.resolve() == blob for p in snapshots.rglob("*"))
