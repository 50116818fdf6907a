"""``models pull`` over HTTP (the Hugging Face path) with a real model file served on loopback:
a fresh download, a checksum mismatch, and a transfer that breaks off and is resumed.

``test_models.py`` covers wheels and resuming a ``.part`` left on disk; these add a real GGUF
(the default SmolLM2) going over the wire end to end.
"""

from __future__ import annotations

import hashlib
import http.server
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant import models
from assistant.errors import AssistantError, ModelCorruptError, ModelError

from .fakes import http_server

FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
URL_PATH = f"/org/SmolLM2-GGUF/resolve/main/{FILE}"


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``data`` with Range support; drops the connection after ``cut_at`` bytes if set."""

    data = b""
    cut_at: int | None = None
    ranges: list[str | None] = []

    def do_GET(self) -> None:
        if self.path != URL_PATH:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        Handler.ranges.append(rng)
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(self.data) - start))
        self.end_headers()
        body = memoryview(self.data)[start:]
        if Handler.cut_at is not None:
            body = body[: Handler.cut_at]
            Handler.cut_at = None  # only the first transfer breaks
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def real_gguf() -> bytes:
    try:
        path = models.resolve("smollm2-135m-instruct", "llm", models.default_model_dir())
    except ModelError as err:
        if os.environ.get("ASSISTANT_REQUIRE_MODELS") == "1":
            pytest.fail(f"default LLM missing: {err.message}")
        pytest.skip(f"default LLM missing ({err.message})")
    return path.read_bytes()


@pytest.fixture
def endpoint(real_gguf: bytes) -> Iterator[str]:
    Handler.data, Handler.cut_at, Handler.ranges = real_gguf, None, []
    with http_server(Handler) as url:
        yield url


def spec_for(tmp_path: Path, sha256: str) -> models.ModelSpec:
    (tmp_path / "m.toml").write_text(
        f'["smol-hf"]\nrole = "llm"\n[["smol-hf".files]]\npath = "{FILE}"\nsha256 = "{sha256}"\n'
        f'source = {{ hf_repo = "org/SmolLM2-GGUF", hf_file = "{FILE}" }}\n'
    )
    return models.load_manifest(tmp_path / "m.toml")["smol-hf"]


def test_pull_downloads_verifies_and_installs(tmp_path: Path, endpoint: str, real_gguf: bytes) -> None:
    spec = spec_for(tmp_path, hashlib.sha256(real_gguf).hexdigest())
    lines: list[str] = []
    path = models.pull(spec, tmp_path / "cache", log=lines.append, hf_endpoint=endpoint)
    assert path == tmp_path / "cache" / "smol-hf" / FILE
    assert path.read_bytes() == real_gguf
    assert [p.name for p in path.parent.iterdir()] == [FILE]
    assert models.verify(spec, tmp_path / "cache") == []
    assert Handler.ranges == [None]
    assert any(URL_PATH in line for line in lines)


def test_checksum_mismatch_leaves_only_the_part(tmp_path: Path, endpoint: str, real_gguf: bytes) -> None:
    spec = spec_for(tmp_path, "0" * 64)
    with pytest.raises(ModelCorruptError, match="sha256"):
        models.pull(spec, tmp_path / "cache", hf_endpoint=endpoint)
    folder = tmp_path / "cache" / "smol-hf"
    assert [p.name for p in folder.iterdir()] == [f"{FILE}.part"]
    assert (folder / f"{FILE}.part").stat().st_size == len(real_gguf)
    with pytest.raises(ModelError):
        models.resolve("smol-hf", "llm", tmp_path / "cache", {"smol-hf": spec})


def test_interrupted_transfer_is_resumed(tmp_path: Path, endpoint: str, real_gguf: bytes) -> None:
    spec = spec_for(tmp_path, hashlib.sha256(real_gguf).hexdigest())
    cut = 10_000_000
    Handler.cut_at = cut
    with pytest.raises(AssistantError):
        models.pull(spec, tmp_path / "cache", hf_endpoint=endpoint)
    part = tmp_path / "cache" / "smol-hf" / f"{FILE}.part"
    assert 0 < part.stat().st_size <= cut and not part.with_name(FILE).exists()
    have = part.stat().st_size
    path = models.pull(spec, tmp_path / "cache", hf_endpoint=endpoint)
    assert path.read_bytes() == real_gguf and not part.exists()
    assert Handler.ranges == [None, f"bytes={have}-"]


def test_broken_transfer_is_reported_as_a_download_failure(
    tmp_path: Path, endpoint: str, real_gguf: bytes
) -> None:
    spec = spec_for(tmp_path, hashlib.sha256(real_gguf).hexdigest())
    Handler.cut_at = 1_000_000
    with pytest.raises(AssistantError) as err:
        models.pull(spec, tmp_path / "cache", hf_endpoint=endpoint)
    assert err.value.code == "model_source_unavailable"
