"""The OpenAI-compatible engine against a real ``python -m llama_cpp.server`` on loopback (serving
the default SmolLM2 GGUF), and against a scripted SSE server for reasoning and error cases."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from assistant import models
from assistant.clock import StreamClock
from assistant.config import DeadlineConfig, LlmConfig
from assistant.engines.openai_http import OpenAIEngine
from assistant.errors import ModelError, StageError
from assistant.messages import ReplyDone, Token, Transcript
from assistant.stages.llm import LlmStage
from assistant.turn.reports import Failed, Marked, Reasoning, ReportLog

from .fakes import http_server, run_stage

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Tell me a long story about a dragon."},
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clock() -> StreamClock:
    clock = StreamClock(realtime=False)
    clock.start()
    return clock


@contextlib.contextmanager
def llama_cpp_server(gguf: Path, alias: str, log_dir: Path, n_ctx: int = 1024) -> Iterator[str]:
    """A real ``python -m llama_cpp.server`` on loopback serving ``gguf``; yields its ``.../v1`` URL."""
    pytest.importorskip("fastapi", reason="the server extra is not installed: pip install -e '.[server]'")
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_ctx", str(n_ctx), "--model_alias", alias, "--verbose", "false"]
    log_path = log_dir / "server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = log_path.read_text(errors="replace")
                    pytest.fail(f"llama_cpp.server did not start: {err[-2000:]}")
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def default_llm() -> Path:
    """The pulled default GGUF (SmolLM2); skips when missing, fails under ASSISTANT_REQUIRE_MODELS=1."""
    try:
        return models.resolve("smollm2-135m-instruct", "llm", models.default_model_dir())
    except ModelError as err:
        if os.environ.get("ASSISTANT_REQUIRE_MODELS") == "1":
            pytest.fail(f"default LLM missing: {err.message}")
        pytest.skip(f"default LLM missing ({err.message})")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (``.../v1``) of a real llama_cpp.server serving SmolLM2."""
    with llama_cpp_server(default_llm(), "smol", tmp_path_factory.mktemp("server")) as base:
        yield base


def config(url: str, **kw: object) -> LlmConfig:
    return replace(LlmConfig(engine="openai", url=url, remote_model="smol", max_tokens=32), **kw)  # type: ignore[arg-type]


def test_streams_a_reply_from_a_real_server(server: str) -> None:
    pieces: list[str] = []
    finish = OpenAIEngine(config(server)).chat(MESSAGES, pieces.append)
    assert finish in ("stop", "length")
    assert len(pieces) > 3 and "".join(pieces).strip()


def test_cancel_mid_stream_stops_and_the_server_still_answers(server: str) -> None:
    engine = OpenAIEngine(config(server, max_tokens=400))
    stop = threading.Event()
    pieces: list[str] = []

    def on_token(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 3:
            stop.set()

    start = time.monotonic()
    assert engine.chat(MESSAGES, on_token, stop) == "cancelled"
    assert 3 <= len(pieces) < 10 and time.monotonic() - start < 20
    again: list[str] = []
    assert engine.chat(MESSAGES[:1] + [{"role": "user", "content": "Hi"}], again.append) in ("stop", "length")
    assert again


def test_stop_while_the_server_is_silent_closes_the_connection() -> None:
    accepted = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            accepted.set()
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
            time.sleep(3)  # says nothing more
            conn.close()

        threading.Thread(target=serve, daemon=True).start()
        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
        start = time.monotonic()
        engine = OpenAIEngine(config(f"http://127.0.0.1:{port}/v1", request_timeout_s=30.0))
        assert engine.chat(MESSAGES, lambda _: None, stop) == "cancelled"
        assert accepted.is_set() and time.monotonic() - start < 2


def test_unreachable_server_is_a_clear_llm_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(StageError) as err:
        OpenAIEngine(config(url)).chat(MESSAGES, lambda _: None)
    assert err.value.code == "llm_failed" and "cannot reach the LLM server" in err.value.message
    assert url in err.value.message


class Scripted(http.server.BaseHTTPRequestHandler):
    """Answers every POST with ``status`` and the SSE ``events`` (or ``body``)."""

    status = 200
    events: list[dict[str, object]] = []
    body = b""
    requests: list[dict[str, object]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        Scripted.requests.append(
            {
                "path": self.path,
                "auth": self.headers.get("Authorization"),
                "json": json.loads(self.rfile.read(length)),
            }
        )
        self.send_response(self.status)
        self.send_header("Content-Type", "text/event-stream" if self.status == 200 else "application/json")
        self.end_headers()
        if self.status != 200:
            self.wfile.write(self.body)
            return
        for event in self.events:
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[str]:
    Scripted.status, Scripted.events, Scripted.body, Scripted.requests = 200, [], b"", []
    with http_server(Scripted) as url:
        yield f"{url}/v1"


def delta(**kw: str) -> dict[str, object]:
    return {"choices": [{"delta": kw, "finish_reason": None}]}


def test_http_error_carries_status_and_body(scripted: str) -> None:
    Scripted.status, Scripted.body = 404, b'{"error": "model smol not found"}'
    with pytest.raises(StageError, match="HTTP 404.*model smol not found"):
        OpenAIEngine(config(scripted)).chat(MESSAGES, lambda _: None)


@pytest.mark.parametrize(
    "events",
    [
        [
            delta(reasoning_content="Let me "),
            delta(reasoning_content="think."),
            delta(content="Paris"),
            delta(content=" it is."),
        ],
        [
            delta(content="<thi"),
            delta(content="nk>Let me think.</th"),
            delta(content="ink>\n\nParis"),
            delta(content=" it is."),
        ],
    ],
    ids=["reasoning_content", "inline"],
)
async def test_reasoning_from_a_server_never_reaches_tokens(
    scripted: str, events: list[dict[str, object]]
) -> None:
    Scripted.events = [*events, {"choices": [{"delta": {}, "finish_reason": "stop"}]}]
    cfg = config(scripted, api_key="k3y")
    log = ReportLog()
    stage = LlmStage(OpenAIEngine(cfg), cfg, log)
    out = await run_stage(stage, [Transcript(1, "Capital of France?")])
    thoughts = [r.text for r in log.of(Reasoning)]
    assert "".join(m.text for m in out if isinstance(m, Token)) == "Paris it is."
    assert out[-1] == ReplyDone(1, "Paris it is.", "stop")
    assert "".join(thoughts) == "Let me think."
    (request,) = Scripted.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer k3y"
    body = request["json"]
    assert isinstance(body, dict) and body["stream"] is True and body["model"] == "smol"
    assert body["messages"][-1] == {"role": "user", "content": "Capital of France?"}


async def test_stage_over_a_real_server(server: str) -> None:
    cfg = config(server, max_tokens=16)
    log = ReportLog()
    out = await run_stage(
        LlmStage(OpenAIEngine(cfg), cfg, log),
        [Transcript(1, "What is the capital of France?")],
    )
    assert [m for m in out if isinstance(m, Token)] and isinstance(out[-1], ReplyDone)
    assert {"first_token", "first_speakable_token"} <= {m.mark for m in log.of(Marked)}


class Lines(http.server.BaseHTTPRequestHandler):
    """Answers each POST with the next script's raw stream lines (then closes the connection);
    once the scripts are used up, with ``GOOD``. A line ``STALL`` waits ``stall_s`` first."""

    scripts: list[list[bytes]] = []
    requests = 0
    stall_s = 0.0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Lines.requests += 1
        lines = Lines.scripts.pop(0) if Lines.scripts else GOOD
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            for line in lines:
                if line == STALL:
                    self.wfile.flush()
                    time.sleep(Lines.stall_s)
                    continue
                self.wfile.write(line + b"\n\n")
        except OSError:
            pass  # the client went away
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


STALL = b"<stall>"


def event(**kw: object) -> bytes:
    return b"data: " + json.dumps({"choices": [{"delta": kw, "finish_reason": None}]}).encode()


HEAD = [event(role="assistant"), event(content="Paris"), event(content=" is")]
"""A real stream's start (as llama_cpp.server sends it): two pieces of the reply."""
GOOD = [*HEAD, event(content=" lovely."), b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}',
        b"data: [DONE]"]  # fmt: skip


@pytest.fixture
def lines() -> Iterator[str]:
    Lines.scripts, Lines.requests, Lines.stall_s = [], 0, 0.0
    with http_server(Lines) as url:
        yield f"{url}/v1"


BAD_EVENTS = {
    "choice_is_a_string": (b'data: {"choices": ["x"]}', "a choice is a string"),
    "delta_is_a_string": (b'data: {"choices": [{"delta": "x"}]}', "delta is a string"),
    "choices_null": (b'data: {"choices": null}', "choices is null"),
    "choices_a_string": (b'data: {"choices": "abc"}', "choices is a string"),
    "content_a_number": (b'data: {"choices": [{"delta": {"content": 5}}]}', "delta.content is a number"),
    "finish_a_list": (b'data: {"choices": [{"delta": {}, "finish_reason": []}]}', "finish_reason is a list"),
    "a_number": (b"data: 5", "the event is a number"),
    "a_list": (b"data: [1, 2]", "the event is a list"),
    "not_json": (b"data: not json", "malformed event"),
    "truncated_json": (b'data: {"choices": [{"delta": {"content": "Par', "malformed event"),
    "invalid_utf8": (b'data: {"choices": [{"delta": {"content": "\xff\xfe"}}]}', "utf-8"),
    "line_too_long": (b"data: " + b"x" * (1 << 20), "longer than"),
    "error_object": (b'data: {"error": {"message": "the model crashed", "code": 500}}', "the model crashed"),
    "error_string": (b'data: {"error": "overloaded"}', "overloaded"),
    "ends_early": (b"", "ended before the reply did"),
}


@pytest.mark.parametrize(("bad", "says"), BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_a_broken_stream_is_one_llm_error_and_the_next_request_answers(
    lines: str, bad: bytes, says: str
) -> None:
    Lines.scripts = [[*HEAD, bad] if bad else HEAD]
    engine = OpenAIEngine(config(lines))
    pieces: list[str] = []
    with pytest.raises(StageError) as err:
        engine.chat(MESSAGES, pieces.append)
    assert err.value.code == "llm_failed" and says.lower() in err.value.message.lower(), err.value.message
    assert pieces == ["Paris", " is"] and Lines.requests == 1  # what came before it, and no retry
    again: list[str] = []
    assert engine.chat(MESSAGES, again.append) == "stop"
    assert "".join(again) == "Paris is lovely." and Lines.requests == 2


def test_a_failing_token_callback_is_an_llm_error_not_a_foreign_one(lines: str) -> None:
    def on_token(_: str) -> None:
        raise KeyError("boom")

    with pytest.raises(StageError) as err:
        OpenAIEngine(config(lines)).chat(MESSAGES, on_token)
    assert err.value.code == "llm_failed" and "KeyError" in err.value.message
    assert isinstance(err.value.__cause__, KeyError)


async def test_a_stalled_stream_is_one_stage_timeout_and_the_next_turn_answers(lines: str) -> None:
    Lines.scripts, Lines.stall_s = [[*HEAD, STALL, *GOOD[3:]]], 3.0
    cfg = config(lines)
    log = ReportLog()
    stage = LlmStage(OpenAIEngine(cfg), cfg, log, DeadlineConfig(llm_stall_s=0.5))
    start = time.monotonic()
    out = await run_stage(stage, [Transcript(1, "Capital of France?"), Transcript(2, "And again?")])
    (failed,) = log.of(Failed)
    assert failed.turn_id == 1 and failed.error.code == "stage_timeout" and failed.stage == "llm"
    assert [m for m in out if isinstance(m, ReplyDone)] == [ReplyDone(2, "Paris is lovely.", "stop")]
    assert time.monotonic() - start < 3.0  # the stalled request was dropped, not waited out
