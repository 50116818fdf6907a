"""``models pull`` over HTTP (the Hugging Face path) with a real model file served on loopback:
a fresh download into the Hugging Face cache layout (checked with huggingface_hub's own offline
resolver), a checksum mismatch, a transfer that breaks off and is resumed, and the progress shown
on a terminal (a pseudo-terminal) and in a pipe.

The server answers like the hub: HEAD gives ``X-Repo-Commit``, ``X-Linked-Etag`` (the sha256)
and ``X-Linked-Size``; GET serves the bytes with Range support. ``test_models.py`` covers wheels
and a plain server without those headers; these add a real GGUF (the default SmolLM2) going over
the wire end to end.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import os
import pty
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant import models
from assistant.errors import AssistantError, ModelCorruptError, ModelError

from .fakes import http_server
from .test_openai_engine import default_llm

FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
URL_PATH = f"/org/SmolLM2-GGUF/resolve/main/{FILE}"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO_DIR = "models--org--SmolLM2-GGUF"
REPO = Path(__file__).resolve().parent.parent


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``data`` with Range support; drops the connection after ``cut_at`` bytes if set."""

    data = b""
    cut_at: int | None = None
    ranges: list[str | None] = []
    advertised: bytes | None = None
    """Content whose sha256 HEAD advertises as the etag, when not ``data`` (a bad mirror)."""

    def do_HEAD(self) -> None:
        if self.path != URL_PATH:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        advertised = self.data if Handler.advertised is None else Handler.advertised
        self.send_header("X-Linked-Etag", f'"{hashlib.sha256(advertised).hexdigest()}"')
        self.send_header("X-Linked-Size", str(len(self.data)))
        self.send_header("ETag", '"a-git-blob-sha1"')
        self.send_header("Content-Length", "0")
        self.end_headers()

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
    return default_llm().read_bytes()


@pytest.fixture(autouse=True)
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache (``HF_HUB_CACHE``), so no test touches the user's."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path / "hf"


@pytest.fixture
def endpoint(real_gguf: bytes) -> Iterator[str]:
    Handler.data, Handler.cut_at, Handler.ranges, Handler.advertised = real_gguf, None, [], None
    with http_server(Handler) as url:
        yield url


def spec_for(tmp_path: Path, sha256: str) -> models.ModelSpec:
    (tmp_path / "m.toml").write_text(
        f'["smol-hf"]\nrole = "llm"\n[["smol-hf".files]]\npath = "{FILE}"\nsha256 = "{sha256}"\n'
        f'source = {{ hf_repo = "org/SmolLM2-GGUF", hf_file = "{FILE}" }}\n'
    )
    return models.load_manifest(tmp_path / "m.toml")["smol-hf"]


def test_pull_downloads_verifies_and_installs(
    tmp_path: Path, endpoint: str, real_gguf: bytes, hf_home: Path
) -> None:
    from huggingface_hub import try_to_load_from_cache

    sha = hashlib.sha256(real_gguf).hexdigest()
    spec = spec_for(tmp_path, sha)
    lines: list[str] = []
    path = models.pull(spec, tmp_path / "cache", log=lines.append, hf_endpoint=endpoint)
    repo = hf_home / REPO_DIR
    assert path == repo / "snapshots" / COMMIT / FILE
    assert path.is_symlink() and os.readlink(path) == f"../../blobs/{sha}"
    assert (repo / "refs" / "main").read_text() == COMMIT
    assert sorted(p.name for p in (repo / "blobs").iterdir()) == [sha]
    assert path.read_bytes() == real_gguf
    # huggingface_hub's own offline lookup finds the same file: the cache is shared
    assert try_to_load_from_cache("org/SmolLM2-GGUF", FILE, cache_dir=hf_home) == str(path)
    assert models.verify(spec, tmp_path / "cache") == []
    assert models.resolve("smol-hf", "llm", tmp_path / "cache", {"smol-hf": spec}) == path
    assert models.list_models(tmp_path / "cache", {"smol-hf": spec}) == [(spec, "present")]
    assert Handler.ranges == [None]
    assert any(URL_PATH in line for line in lines)

    models.pull(spec, tmp_path / "cache", hf_endpoint=endpoint)
    assert Handler.ranges == [None]  # verified in place: not fetched again

    assert models.remove(spec, tmp_path / "cache") and not repo.exists()
    assert models.list_models(tmp_path / "cache", {"smol-hf": spec}) == [(spec, "missing")]
    assert not models.remove(spec, tmp_path / "cache")


def test_a_blob_already_in_the_cache_is_linked_not_fetched(
    tmp_path: Path, endpoint: str, real_gguf: bytes, hf_home: Path
) -> None:
    sha = hashlib.sha256(real_gguf).hexdigest()
    blobs = hf_home / REPO_DIR / "blobs"
    blobs.mkdir(parents=True)
    (blobs / sha).write_bytes(real_gguf)  # as another HF tool left it
    path = models.pull(spec_for(tmp_path, sha), tmp_path / "cache", hf_endpoint=endpoint)
    assert path.resolve() == blobs / sha and Handler.ranges == []


def test_checksum_mismatch_leaves_only_the_part(
    tmp_path: Path, endpoint: str, real_gguf: bytes, hf_home: Path
) -> None:
    spec = spec_for(tmp_path, "0" * 64)
    with pytest.raises(ModelCorruptError, match="sha256") as err:
        models.pull(spec, tmp_path / "cache", hf_endpoint=endpoint)
    etag = hashlib.sha256(real_gguf).hexdigest()
    repo = hf_home / REPO_DIR
    assert f"{etag}.incomplete" in err.value.message
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*")) == ["blobs", f"blobs/{etag}.incomplete"]
    assert (repo / "blobs" / f"{etag}.incomplete").stat().st_size == len(real_gguf)
    with pytest.raises(ModelError):
        models.resolve("smol-hf", "llm", tmp_path / "cache", {"smol-hf": spec})
    assert models.list_models(tmp_path / "cache", {"smol-hf": spec}) == [(spec, "missing")]


def test_interrupted_transfer_is_resumed(
    tmp_path: Path, endpoint: str, real_gguf: bytes, hf_home: Path
) -> None:
    sha = hashlib.sha256(real_gguf).hexdigest()
    spec = spec_for(tmp_path, sha)
    cut = 10_000_000
    Handler.cut_at = cut
    with pytest.raises(AssistantError):
        models.pull(spec, tmp_path / "cache", hf_endpoint=endpoint)
    part = hf_home / REPO_DIR / "blobs" / f"{sha}.incomplete"
    assert 0 < part.stat().st_size <= cut and not part.with_name(sha).exists()
    assert models.list_models(tmp_path / "cache", {"smol-hf": spec}) == [(spec, "partial")]
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


PULL = (
    "import sys; from pathlib import Path; from assistant import models; "
    "spec = models.load_manifest(Path(sys.argv[1]))['smol-hf']; "
    "models.pull(spec, Path(sys.argv[2]), hf_endpoint=sys.argv[3], "
    "log=lambda line: print(line, file=sys.stderr, flush=True))"
)


def _pull_cmd(tmp_path: Path, endpoint: str, real_gguf: bytes) -> list[str]:
    spec_for(tmp_path, hashlib.sha256(real_gguf).hexdigest())
    return [sys.executable, "-c", PULL, str(tmp_path / "m.toml"), str(tmp_path / "cache"), endpoint]


def test_progress_on_a_terminal_is_a_bar(tmp_path: Path, endpoint: str, real_gguf: bytes) -> None:
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # rows, columns
    proc = subprocess.Popen(
        _pull_cmd(tmp_path, endpoint, real_gguf), stderr=child, stdout=subprocess.DEVNULL, cwd=REPO
    )
    os.close(child)
    out = b""
    while True:
        try:
            block = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not block:
            break
        out += block
    os.close(main)
    assert proc.wait(60) == 0, out.decode(errors="replace")[-2000:]
    text = out.decode(errors="replace")
    assert "\r" in text and "100%|" in text and FILE in text  # tqdm redraws one line
    assert "MB)" not in text  # no log-style progress lines on a terminal


def test_progress_in_a_pipe_is_plain_lines(tmp_path: Path, endpoint: str, real_gguf: bytes) -> None:
    proc = subprocess.run(
        _pull_cmd(tmp_path, endpoint, real_gguf), capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stderr and "|" not in proc.stderr
    steps = [line for line in proc.stderr.splitlines() if line.startswith(f"{FILE}: ")]
    percents = [int(line.split()[1].rstrip("%")) for line in steps]
    assert [p // 10 for p in percents] == list(range(1, 11)) and percents[-1] == 100  # one per 10 %
    assert steps[-1].endswith(f"({len(real_gguf) / 1e6:,.1f} MB of {len(real_gguf) / 1e6:,.1f} MB)")


def test_without_a_manifest_sha256_the_hubs_lfs_etag_is_checked(
    tmp_path: Path, endpoint: str, real_gguf: bytes, hf_home: Path
) -> None:
    (tmp_path / "m.toml").write_text(
        f'["smol-hf"]\nrole = "llm"\nsha256_known = false\n[["smol-hf".files]]\npath = "{FILE}"\n'
        f'source = {{ hf_repo = "org/SmolLM2-GGUF", hf_file = "{FILE}" }}\n'
    )
    spec = models.load_manifest(tmp_path / "m.toml")["smol-hf"]
    Handler.advertised = real_gguf + b"other"  # the hub says one thing, the bytes are another
    with pytest.raises(ModelCorruptError, match="expected"):
        models.pull(spec, tmp_path / "cache", hf_endpoint=endpoint)
    Handler.advertised = None
    path = models.pull(spec, tmp_path / "cache", hf_endpoint=endpoint)
    assert path.read_bytes() == real_gguf


def test_lfs_sha256_only_from_a_sha256_shaped_etag() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    assert models.lfs_sha256(sha) == sha
    assert models.lfs_sha256("a" * 40) is None  # a git blob id
    assert models.lfs_sha256(None) is None and models.lfs_sha256("W/" + sha) is None
