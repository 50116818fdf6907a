"""``llm.reasoning = skip | budget`` over the OpenAI-compatible engine, on the tiny R1 GGUF (R1's
real tokenizer and chat template, random weights: the words are noise, the mechanics are real).

Two servers on loopback:

- a real ``python -m llama_cpp.server``, which cannot continue a final assistant message: the
  engine sees that (no ``/apply-template``) and falls back to ``hidden``, as documented;
- a stand-in for llama.cpp's ``llama-server`` (no llama-server binary can be installed here): a
  small HTTP server that does what llama-server documents for a trailing assistant message
  (PR #13174: ``/apply-template`` and chat completions continue it) and generates with real
  llama.cpp through ``LlamaEngine`` on the same tiny GGUF, recording each prompt's token ids.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from assistant.chat.reasoning import CLOSE_THINK, OPEN_PREFILL, SKIP_PREFILL
from assistant.clock import StreamClock
from assistant.config import LlmConfig
from assistant.engines.openai_http import OpenAIEngine
from assistant.messages import ReplyDone, Token, Transcript
from assistant.stages.llm import LlmStage
from assistant.turn.reports import ActionTaken, Reasoning, ReportLog

from .fakes import http_server, run_stage
from .test_openai_engine import llama_cpp_server
from .test_r1 import ASSISTANT, END_THINK, THINK, tiny_r1  # noqa: F401  (tiny_r1 is a fixture)

SYSTEM = "You are terse."
BASE = LlmConfig(engine="openai", remote_model="tiny-r1", system_prompt=SYSTEM, n_ctx=512, warm=False)


class LlamaServerLike(http.server.BaseHTTPRequestHandler):
    """llama-server's documented prefill behaviour over a real llama.cpp generation."""

    engine: Any = None
    requests: list[dict[str, Any]] = []
    prompts: list[list[int]] = []
    """Token ids each chat request generated from."""
    streamed: list[list[str]] = []
    """The pieces each chat request sent."""

    def _json(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        return body

    @staticmethod
    def _split(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
        if messages and messages[-1]["role"] == "assistant":
            return messages[:-1], messages[-1]["content"]
        return messages, ""

    def do_POST(self) -> None:
        body = self._json()
        LlamaServerLike.requests.append({"path": self.path, **body})
        chat, prefill = self._split(body["messages"])
        if self.path == "/apply-template":
            prompt = self.engine.template.render_text(chat) + prefill
            data = json.dumps({"prompt": prompt}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if self.path != "/v1/chat/completions":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        stop = threading.Event()
        pieces: list[str] = []
        LlamaServerLike.streamed.append(pieces)

        def send(piece: str) -> None:
            event = {"choices": [{"delta": {"content": piece}, "finish_reason": None}]}
            try:
                self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                self.wfile.flush()
                pieces.append(piece)
            except OSError:
                stop.set()  # the client went away: stop generating, as llama-server does

        self.engine.config = replace(self.engine.config, max_tokens=body["max_tokens"])
        finish = self.engine.chat(chat, send, stop, prefill=prefill)
        LlamaServerLike.prompts.append(list(self.engine.last_prompt))
        if not stop.is_set():
            done = {"choices": [{"delta": {}, "finish_reason": finish}]}
            self.wfile.write(b"data: " + json.dumps(done).encode() + b"\n\ndata: [DONE]\n\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def r1_engine(tiny_r1: Path) -> Any:  # noqa: F811
    from assistant.engines.llama import LlamaEngine

    return LlamaEngine(tiny_r1, LlmConfig(system_prompt=SYSTEM, n_ctx=512, max_tokens=16, warm=False))


@pytest.fixture
def continuing(r1_engine: Any) -> Iterator[str]:
    LlamaServerLike.engine, LlamaServerLike.requests = r1_engine, []
    LlamaServerLike.prompts, LlamaServerLike.streamed = [], []
    with http_server(LlamaServerLike) as url:
        yield f"{url}/v1"


@pytest.fixture(scope="module")
def llama_cpp_r1(tiny_r1: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # noqa: F811
    with llama_cpp_server(tiny_r1, "tiny-r1", tmp_path_factory.mktemp("r1-server"), n_ctx=512) as url:
        yield url


def _clock() -> StreamClock:
    clock = StreamClock(realtime=False)
    clock.start()
    return clock


async def _turn(config: LlmConfig) -> tuple[OpenAIEngine, list[Any], list[str], list[str]]:
    """One turn through the stage: (engine, stage output, reasoning reported, actions reported)."""
    engine = OpenAIEngine(config)
    log = ReportLog()
    stage = LlmStage(engine, config, log)
    out = await run_stage(stage, [Transcript(1, "Capital of France?")])
    thoughts = [r.text for r in log.of(Reasoning)]
    actions = [r.action for r in log.of(ActionTaken)]
    return engine, out, thoughts, actions


def _spoken(out: list[Any]) -> str:
    return "".join(m.text for m in out if isinstance(m, Token))


def _chats() -> list[dict[str, Any]]:
    return [r for r in LlamaServerLike.requests if r["path"] == "/v1/chat/completions"]


async def test_skip_prefills_an_empty_block_where_the_server_continues(
    continuing: str, r1_engine: Any
) -> None:
    engine, out, thoughts, actions = await _turn(
        replace(BASE, url=continuing, reasoning="skip", max_tokens=8)
    )
    assert engine.continues is True and engine.thinks
    assert LlamaServerLike.requests[0]["path"] == "/apply-template"
    (chat,) = _chats()
    assert chat["messages"][-1] == {"role": "assistant", "content": SKIP_PREFILL}
    assert chat["messages"][-2] == {"role": "user", "content": "Capital of France?"}
    assert chat["chat_template_kwargs"] == {"enable_thinking": False}
    # the model's prompt ends with the generation prompt and the empty, closed think block
    empty = r1_engine._llm.tokenize(SKIP_PREFILL.encode(), add_bos=False, special=True)
    assert empty[0] == THINK and END_THINK in empty
    (prompt,) = LlamaServerLike.prompts
    assert prompt[-len(empty) - 1 :] == [ASSISTANT, *empty]
    assert isinstance(out[-1], ReplyDone) and out[-1].finish_reason in ("stop", "length")
    assert actions == []
    spoken = _spoken(out)
    assert "<think>" not in spoken and "</think>" not in spoken
    assert all(t.strip() not in spoken for t in thoughts if t.strip())


async def test_budget_closes_the_block_at_the_budget_and_continues(continuing: str, r1_engine: Any) -> None:
    config = replace(BASE, url=continuing, reasoning="budget", think_budget_tokens=4, max_tokens=12)
    engine, out, thoughts, actions = await _turn(config)
    assert engine.thinks and actions == ["thinking_cut"]
    first, second = _chats()
    assert first["messages"][-1] == {"role": "assistant", "content": OPEN_PREFILL}
    thought = LlamaServerLike.streamed[0][:4]
    assert len(thought) == 4 and "".join(thoughts) == "".join(thought)
    # the continuation's prefill: the open block, exactly the 4 thought pieces, then the close
    assert second["messages"][-1] == {
        "role": "assistant",
        "content": OPEN_PREFILL + "".join(thought) + CLOSE_THINK,
    }
    assert second["max_tokens"] == 12 - 4
    close = r1_engine._llm.tokenize(CLOSE_THINK.encode(), add_bos=False, special=True)
    assert LlamaServerLike.prompts[1][-len(close) :] == close and END_THINK in close
    # the first stream was dropped at the budget: the server stopped well before max_tokens
    assert len(LlamaServerLike.streamed[0]) < 12
    # what is spoken is the continuation's answer, never the thought
    answer = "".join(LlamaServerLike.streamed[1]).lstrip()
    assert _spoken(out) == answer and out[-1] == ReplyDone(1, answer, out[-1].finish_reason)


async def test_llama_cpp_server_cannot_continue_so_skip_falls_back(
    llama_cpp_r1: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        engine, out, _, actions = await _turn(replace(BASE, url=llama_cpp_r1, reasoning="skip", max_tokens=8))
    assert engine.continues is False and not engine.thinks
    assert "does not continue a final assistant message" in caplog.text
    (body,) = engine.last_requests
    assert body["messages"][-1] == {"role": "user", "content": "Capital of France?"}  # no prefill
    assert body["chat_template_kwargs"] == {"enable_thinking": False}  # accepted and ignored
    assert isinstance(out[-1], ReplyDone) and actions == []
    assert "<think>" not in _spoken(out) and "</think>" not in _spoken(out)


async def test_llama_cpp_server_budget_falls_back_to_hidden(llama_cpp_r1: str) -> None:
    config = replace(BASE, url=llama_cpp_r1, reasoning="budget", think_budget_tokens=2, max_tokens=8)
    engine, out, _, actions = await _turn(config)
    (body,) = engine.last_requests
    assert "chat_template_kwargs" not in body and body["messages"][-1]["role"] == "user"
    assert actions == [] and isinstance(out[-1], ReplyDone)  # nothing cut: it could not be continued
