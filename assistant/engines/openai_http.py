"""An LLM on any OpenAI-compatible server: llama.cpp's ``llama-server``, ``python -m
llama_cpp.server``, vLLM, Ollama. Chat completions streamed over server-sent events with the
standard library only (``http.client``), so no new dependency.

Stopping: a small watcher thread shuts the socket down as soon as the turn's stop event is set,
so a generation stops mid-stream even while the server is silent (and the server sees the client
go away and stops generating).

Reasoning: a server may send the thinking separately (``delta.reasoning_content``, llama-server's
``--reasoning-format deepseek``; ``delta.reasoning``, some others) or inline in the content
(``<think>...</think>``). Separate reasoning is re-wrapped in ``<think>``/``</think>`` before it is
handed on, so the stage's ``ThinkFilter`` treats both the same and TTS never hears either.

Errors become ``StageError("llm", ...)``: the server unreachable (with its URL), an HTTP error
(with the status and the start of the body), a malformed stream.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

from ..config import LlmConfig
from ..errors import ConfigError, StageError

ChatMessage = dict[str, str]


class OpenAIEngine:
    """A chat engine that streams from ``{llm.url}/chat/completions``."""

    def __init__(self, config: LlmConfig) -> None:
        self.config = config
        url = urllib.parse.urlsplit(config.url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"llm.url = {config.url!r} is not allowed: give an http:// or https:// URL")
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._https else 80)
        self.endpoint = f"{url.path}/chat/completions"
        """Path of the chat completions endpoint on the server."""
        self.url = config.url.rstrip("/")
        self.model = config.remote_model or config.model
        """The model name sent to the server."""

    def _connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self.config.request_timeout_s)

    def _body(self, messages: list[ChatMessage]) -> bytes:
        cfg = self.config
        return json.dumps(
            {
                "model": self.model,
                "messages": messages,
                "stream": True,
                "max_tokens": cfg.max_tokens,
                "temperature": cfg.temperature,
                "top_p": cfg.top_p,
                "seed": cfg.seed,
            }
        ).encode("utf-8")

    def chat(
        self,
        messages: list[ChatMessage],
        on_token: Callable[[str], None],
        stop: threading.Event | None = None,
    ) -> str:
        """Stream a reply, calling ``on_token`` per piece; returns the finish reason; blocks."""
        stop = stop or threading.Event()
        done = threading.Event()
        conn = self._connect()
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"

        sockets: list[socket.socket] = []

        def watch() -> None:
            while not done.wait(0.05):
                if stop.is_set():
                    for sock in sockets:  # http.client may already have handed it to the response
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                    return

        watcher = threading.Thread(target=watch, name="llm-http-stop", daemon=True)
        watcher.start()
        try:
            try:
                conn.connect()
                if conn.sock is not None:
                    sockets.append(conn.sock)
                conn.request("POST", self.endpoint, self._body(messages), headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as err:
                if stop.is_set():
                    return "cancelled"
                raise StageError("llm", f"cannot reach the LLM server at {self.url}: {err}") from err
            if resp.status != 200:
                body = resp.read(2000).decode("utf-8", "replace").strip()
                raise StageError(
                    "llm", f"the LLM server at {self.url} answered HTTP {resp.status} {resp.reason}: {body}"
                )
            return self._stream(resp, on_token, stop)
        finally:
            done.set()
            conn.close()
            watcher.join(1.0)

    def _stream(
        self, resp: http.client.HTTPResponse, on_token: Callable[[str], None], stop: threading.Event
    ) -> str:
        finish = "stop"
        thinking = False
        while True:
            try:
                line = resp.readline()
            except (OSError, http.client.HTTPException) as err:
                if stop.is_set():
                    return "cancelled"
                raise StageError("llm", f"the stream from {self.url} broke off: {err}") from err
            if stop.is_set():
                return "cancelled"
            if not line:
                return finish
            text = line.decode("utf-8", "replace").strip()
            if not text.startswith("data:"):
                continue  # blank separators, comments, event names
            data = text[5:].strip()
            if data == "[DONE]":
                return finish
            try:
                chunk: Any = json.loads(data)
                choices = chunk.get("choices") or []
            except (ValueError, AttributeError) as err:
                raise StageError(
                    "llm", f"the server at {self.url} sent a malformed event: {data[:200]}"
                ) from err
            if not choices:
                if isinstance(chunk.get("error"), dict | str):
                    raise StageError("llm", f"the server at {self.url} reported: {chunk['error']}")
                continue
            choice = choices[0]
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                if not thinking:
                    on_token("<think>")
                    thinking = True
                on_token(reasoning)
            content = delta.get("content")
            if content:
                if thinking:
                    on_token("</think>")
                    thinking = False
                on_token(content)
            finish = choice.get("finish_reason") or finish
