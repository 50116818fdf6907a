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

``llm.reasoning = "skip"`` and ``"budget"`` need the server to *continue* a final assistant
message (a prefill), which is not part of the OpenAI API:

- llama.cpp's ``llama-server`` does (ggml-org/llama.cpp PR #13174: a trailing assistant message
  is prefilled, also in ``POST /apply-template``; ``--no-prefill-assistant`` turns it off), and
  accepts it from a thinking template only with ``chat_template_kwargs.enable_thinking = false``
  (PR #15404; otherwise HTTP 400 "Assistant response prefill is incompatible with
  enable_thinking"). At start the engine asks ``POST {root}/apply-template`` to render a chat
  ending in an assistant message; if the prompt ends with that message, the server continues
  (``continues``), and the engine works like the in-process one: ``skip`` sends the empty block
  ``<think>\n\n</think>\n\n`` as the assistant prefill; ``budget`` prefills ``<think>\n``,
  and when the stage's ``steer`` hook says the budget is spent (it counts reasoning pieces and
  ms as they stream and reports ``thinking_cut``), the engine drops that stream (the server sees
  the client go and stops) and sends a continuation whose assistant prefill is ``<think>\n``, the
  reasoning so far and ``\n</think>\n\n``, so the model answers from there.
- ``python -m llama_cpp.server`` does not: it renders every message with the GGUF's template and
  always appends the generation prompt (R1's template even strips an assistant message up to
  ``</think>`` and closes it with ``<｜end▁of▁sentence｜>``), and it has no ``/apply-template``.
  vLLM (``continue_final_message``) and Ollama may continue one, but the engine cannot tell, so
  they are treated the same way. The fallback there, logged once as a warning: ``continues`` is
  False, so ``thinks`` is False and the stage plans ``hidden`` (nothing prefilled, nothing cut,
  no ``thinking_cut``); ``skip`` still asks with ``chat_template_kwargs.enable_thinking = false``
  (honoured by templates with that switch, ignored by llama_cpp.server). Either way thinking that
  does arrive is never spoken: the stage's ``ThinkFilter`` holds it back.
- A server that cannot be reached at start is asked again at the next turn.

Errors become ``StageError("llm", ...)``, one per request: the server unreachable (with its URL),
an HTTP error (with the status and the start of the body), an ``error`` object in the stream, a
malformed stream (a line that is not UTF-8 or over ``LINE_LIMIT``, an event that is not JSON or
not shaped like a chat completion chunk, a stream that ends before the reply did). Anything else
that escapes a request (a callback's error included) is mapped the same way, so nothing foreign
crosses this seam. A server that stalls is the stage's deadline's business (``[deadlines]``):
the stage sets the stop event, the watcher shuts the socket, and the call ends ``cancelled``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from assistant.chat.reasoning import CLOSE_TAG, SKIP_PREFILL
from assistant.config import LlmConfig
from assistant.contracts import ChatEngine, ChatMessage
from assistant.errors import AssistantError, ConfigError, StageError

_LOGGER = logging.getLogger(__name__)
NO_THINKING = {"enable_thinking": False}
"""``chat_template_kwargs`` sent with a prefill (and in ``skip`` mode)."""
PROBE_TIMEOUT_S = 5.0
"""The start-up question to ``/apply-template`` waits at most this long."""
LINE_LIMIT = 1 << 20
"""The longest line of a stream read, in bytes (a chunk carries a few hundred)."""


class ServerReported(Exception):
    """The stream carried an ``error`` object instead of a chunk."""


@dataclass(frozen=True)
class Delta:
    """What one chunk of a chat completions stream adds to the reply (its first choice)."""

    content: str = ""
    reasoning: str = ""
    """``delta.reasoning_content`` (llama-server) or ``delta.reasoning`` (some others)."""
    finish_reason: str | None = None


DONE = Delta(finish_reason="[DONE]")
"""Stands for the stream's ``data: [DONE]`` line (compared by identity)."""


def _json_type(value: object) -> str:
    """``value``'s JSON type, as a server's author would name it."""
    for kind, name in ((bool, "a boolean"), (int | float, "a number"), (str, "a string"), (list, "a list")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else "an object"


def _text(value: object, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{what} is {_json_type(value)}, not a string")
    return value


def parse_event(data: str) -> Delta | None:
    """One ``data:`` payload of a chat completions stream: its first choice's delta, or None for
    a chunk without choices (a usage report). Raises ``ServerReported`` for an ``error`` object
    and ``ValueError`` naming what is wrong for anything not shaped like a chunk."""
    chunk = json.loads(data)
    if not isinstance(chunk, dict):
        raise ValueError(f"the event is {_json_type(chunk)}, not an object")
    error = chunk.get("error")
    if error is not None:
        message = error.get("message") if isinstance(error, dict) else None
        raise ServerReported(message if isinstance(message, str) else json.dumps(error)[:300])
    choices = chunk.get("choices", [])
    if not isinstance(choices, list):
        raise ValueError(f"choices is {_json_type(choices)}, not a list")
    if not choices:
        return None
    choice = choices[0]
    if not isinstance(choice, dict):
        raise ValueError(f"a choice is {_json_type(choice)}, not an object")
    delta = choice.get("delta") or {}
    if not isinstance(delta, dict):
        raise ValueError(f"delta is {_json_type(delta)}, not an object")
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    finish = choice.get("finish_reason")
    return Delta(
        _text(delta.get("content"), "delta.content"),
        _text(reasoning, "delta.reasoning_content"),
        _text(finish, "finish_reason") or None,
    )


def parse_line(line: bytes) -> Delta | None:
    """One line of a stream: a chunk's ``Delta``, ``DONE``, or None (a blank separator, a
    comment, an event name, a chunk without choices). Raises ``ServerReported`` for an ``error``
    object and ``ValueError`` for a malformed line."""
    if len(line) > LINE_LIMIT:
        raise ValueError(f"a line is longer than {LINE_LIMIT} bytes")
    text = line.decode("utf-8").strip()  # strict: invalid UTF-8 is a broken stream, not text
    if not text.startswith("data:"):
        return None
    data = text[5:].strip()
    return DONE if data == "[DONE]" else parse_event(data)


class OpenAIEngine(ChatEngine):
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
        self.root = url.path.removesuffix("/v1")
        """Path of the server's root (``llm.url`` without a trailing ``/v1``)."""
        self.model = config.remote_model or config.model
        """The model name sent to the server."""
        self.continues: bool | None = None
        """The server continues a final assistant message (None: not known yet)."""
        self.last_requests: list[dict[str, Any]] = []
        """Request bodies of the last ``chat`` (a budget cut makes two), for tests and reports."""
        if config.reasoning != "hidden":
            self.probe()

    def reconfigure(self, config: LlmConfig) -> None:
        """Sampling, reasoning, key and model name apply from the next request."""
        self.config = config

    @property
    def thinks(self) -> bool:
        """``skip``/``budget`` apply (the stage then passes ``prefill`` and ``steer``)."""
        return self.config.reasoning != "hidden" and bool(self.continues)

    def _connect(self, timeout: float | None = None) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=timeout or self.config.request_timeout_s)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        return headers

    def probe(self) -> bool | None:
        """Ask ``/apply-template`` whether a final assistant message is continued; sets
        ``continues`` (None when the server cannot be reached)."""
        body = {
            "messages": [{"role": "user", "content": "?"}, {"role": "assistant", "content": SKIP_PREFILL}],
            "chat_template_kwargs": NO_THINKING,
        }
        conn = self._connect(min(self.config.request_timeout_s, PROBE_TIMEOUT_S))
        try:
            conn.request("POST", f"{self.root}/apply-template", json.dumps(body), self._headers())
            resp = conn.getresponse()
            data = resp.read(1 << 20)
        except (OSError, http.client.HTTPException) as err:
            _LOGGER.warning("llm: cannot ask %s whether it continues a prefill: %s", self.url, err)
            return None
        finally:
            conn.close()
        try:
            prompt = json.loads(data).get("prompt") if resp.status == 200 else None
        except (ValueError, AttributeError):
            prompt = None
        self.continues = isinstance(prompt, str) and prompt.endswith(SKIP_PREFILL)
        if not self.continues:
            _LOGGER.warning(
                "llm.reasoning = %s: the server at %s does not continue a final assistant message"
                " (no llama-server /apply-template), so thinking is hidden, not %s",
                self.config.reasoning,
                self.url,
                "skipped" if self.config.reasoning == "skip" else "cut at the budget",
            )
        return self.continues

    def _body(self, messages: list[ChatMessage], prefill: str, max_tokens: int) -> dict[str, Any]:
        cfg = self.config
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [*messages, {"role": "assistant", "content": prefill}] if prefill else messages,
            "stream": True,
            "max_tokens": max_tokens,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "seed": cfg.seed,
        }
        if prefill or cfg.reasoning == "skip":
            body["chat_template_kwargs"] = NO_THINKING
        return body

    def chat(
        self,
        messages: list[ChatMessage],
        on_token: Callable[[str], None],
        stop: threading.Event | None = None,
        *,
        prefill: str = "",
        steer: Callable[[], str | None] | None = None,
    ) -> str:
        """Stream a reply, calling ``on_token`` per piece; returns the finish reason; blocks.

        ``prefill`` is sent as the start of the assistant's message (only where ``continues``);
        ``steer`` is called after each piece and may return text that closes the think block:
        the stream is then dropped and continued from the prefill, the pieces so far and that text.
        """
        stop = stop or threading.Event()
        if self.continues is None and self.config.reasoning != "hidden":
            self.probe()  # for the next turn: this one was planned without it
        self.last_requests = []
        generated: list[str] = []  # pieces of the current request (continued from on a cut)
        produced = 0

        def piece(text: str) -> None:
            nonlocal produced
            generated.append(text)
            produced += 1
            on_token(text)

        inside = bool(prefill) and CLOSE_TAG not in prefill
        while True:
            if stop.is_set():  # a stopped turn sends nothing: llama_cpp.server would cut the
                return "cancelled"  # request it is streaming short for a new one
            left = self.config.max_tokens - produced
            if left <= 0:
                return "length"
            body = self._body(messages, prefill, left)
            self.last_requests.append(body)
            try:
                finish, extra = self._request(body, piece, stop, steer, inside)
            except AssistantError:
                raise
            except Exception as err:  # the seam: nothing foreign leaves a request
                raise StageError(
                    "llm", f"the request to {self.url} failed: {type(err).__name__}: {err}"
                ) from err
            if not extra:
                return finish
            prefill += "".join(generated) + extra
            generated.clear()
            inside, steer = False, None

    def _request(
        self,
        body: dict[str, Any],
        on_token: Callable[[str], None],
        stop: threading.Event,
        steer: Callable[[], str | None] | None,
        inside: bool,
    ) -> tuple[str, str]:
        """One streamed request: ``(finish reason, text steer asked for or "")``."""
        done = threading.Event()
        conn = self._connect()
        headers = {**self._headers(), "Accept": "text/event-stream"}
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
                conn.request("POST", self.endpoint, json.dumps(body).encode("utf-8"), headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as err:
                if stop.is_set():
                    return "cancelled", ""
                raise StageError("llm", f"cannot reach the LLM server at {self.url}: {err}") from err
            with resp:  # closed however this ends: a server that closes the connection gives it the socket
                if resp.status != 200:
                    text = resp.read(2000).decode("utf-8", "replace").strip()
                    raise StageError(
                        "llm",
                        f"the LLM server at {self.url} answered HTTP {resp.status} {resp.reason}: {text}",
                    )
                return self._stream(resp, on_token, stop, steer, inside)
        finally:
            done.set()
            conn.close()  # also how a steered stream is dropped: the server stops generating
            watcher.join(1.0)

    def _stream(
        self,
        resp: http.client.HTTPResponse,
        on_token: Callable[[str], None],
        stop: threading.Event,
        steer: Callable[[], str | None] | None,
        inside: bool,
    ) -> tuple[str, str]:
        finish = ""
        thinking = False  # within a run of separate reasoning pieces
        need_open = not inside  # separate reasoning needs an opening tag, unless the prefill opened it
        while True:
            try:
                line = resp.readline(LINE_LIMIT + 1)
            except (OSError, http.client.HTTPException) as err:
                if stop.is_set():
                    return "cancelled", ""
                raise StageError("llm", f"the stream from {self.url} broke off: {err}") from err
            if stop.is_set():
                return "cancelled", ""
            if not line:
                if not finish:
                    raise StageError("llm", f"the stream from {self.url} ended before the reply did")
                return finish, ""
            try:
                delta = parse_line(line)
            except ServerReported as err:
                raise StageError("llm", f"the server at {self.url} reported: {err}") from err
            except ValueError as err:
                excerpt = line[:200].decode("utf-8", "replace").strip()
                raise StageError(
                    "llm", f"the server at {self.url} sent a malformed event ({err}): {excerpt}"
                ) from err
            if delta is None:
                continue
            if delta is DONE:
                return finish or "stop", ""
            if delta.reasoning:
                if not thinking and need_open:
                    on_token("<think>")
                thinking = True
                on_token(delta.reasoning)
            if delta.content:
                if thinking:
                    on_token("</think>")
                    thinking, need_open = False, True
                on_token(delta.content)
            finish = delta.finish_reason or finish
            if (delta.reasoning or delta.content) and steer is not None and (extra := steer()):
                return "steered", extra
