"""Where pipelines are found: the user's folder, then the shipped ones (package data), or a path."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from assistant.data import PIPELINES, folder
from assistant.errors import ConfigError

PIPELINES_DIR = folder(PIPELINES)
"""The shipped pipelines: package data (``pipelines/*.toml`` in the source tree)."""


@dataclass(frozen=True)
class PipelineFile:
    """A pipeline TOML: its name (the file's stem), where it comes from, and its path."""

    name: str
    origin: str
    """``user`` (the user's pipelines folder), ``shipped`` (package data) or ``path`` (given as a file)."""
    path: Path


def user_pipelines_dir() -> Path:
    """``$ASSISTANT_CONFIG_DIR/pipelines``, else ``pipelines`` in the user's config folder
    (``$XDG_CONFIG_HOME/assistant``, by default ``~/.config/assistant``)."""
    base = os.environ.get("ASSISTANT_CONFIG_DIR") or platformdirs.user_config_dir("assistant")
    return Path(base) / "pipelines"


def find_pipelines() -> list[PipelineFile]:
    """Every pipeline that can be named: the user's, then the shipped ones, each sorted by name.

    A user pipeline of the same name as a shipped one wins: lookups take the first of a name.
    """
    found: list[PipelineFile] = []
    for origin, where in (("user", user_pipelines_dir()), ("shipped", PIPELINES_DIR)):
        files = sorted(p for p in where.glob("*.toml") if p.is_file())
        found += [PipelineFile(p.stem, origin, p) for p in files]
    return found


def pipeline_file(name_or_path: str) -> PipelineFile:
    """A pipeline by name (``default``: the user's, else the shipped one), or a path to a TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"--pipeline {name_or_path}: no such file")
        return PipelineFile(candidate.stem, "path", candidate)
    found = find_pipelines()
    for pipeline in found:
        if pipeline.name == name_or_path:
            return pipeline
    known = sorted({p.name for p in found})
    user = user_pipelines_dir()
    raise ConfigError(
        f"--pipeline {name_or_path}: unknown pipeline; choose one of {known} or give a .toml path"
        f" (looked for {name_or_path}.toml in {user}{'' if user.is_dir() else ', which does not exist'},"
        f" and in the shipped {PIPELINES_DIR})"
    )


def resolve_pipeline(name_or_path: str) -> Path:
    """The file of a pipeline name or path (see ``pipeline_file``)."""
    return pipeline_file(name_or_path).path


def pipeline_listing(selected: str) -> list[str]:
    """``assistant pipelines``: where pipelines are looked for, then one line per pipeline (name,
    origin, path), the one ``selected`` (``--pipeline``) marked ``*``, a shadowed shipped one noted."""
    chosen = pipeline_file(selected)
    user = user_pipelines_dir()
    lines = [
        f"user pipelines:    {user}{'' if user.is_dir() else ' (does not exist yet)'}",
        f"shipped pipelines: {PIPELINES_DIR}",
    ]
    rows = ([chosen] if chosen.origin == "path" else []) + find_pipelines()
    width = max((len(p.name) for p in rows), default=0)
    named: set[str] = set()
    for p in rows:
        note = ""
        if p.origin != "path":
            note = "  (hidden by the user's)" if p.name in named else ""
            named.add(p.name)
        lines.append(f"{'*' if p == chosen else ' '} {p.name:{width}}  {p.origin:7}  {p.path}{note}")
    lines.append(f"* the pipeline in use (--pipeline {selected}); a name takes the user's before the shipped")
    return lines
