"""Fault injection around the real engines, the real audio sink and a real LLM server.

Each wrapper subclasses its contract (``Transcriber``, ``ChatEngine``, ``Synthesizer``; the sink
follows ``AudioSink``), delegates to the real thing, and fails on demand, once (``arm``):

    first    the call raises ``error`` as it starts, before the real engine runs (an engine
             whose seam maps nothing: what the stage's error boundary must catch)
    inside   the real engine's own callback raises ``error`` after ``after`` tokens or audio
             pieces have gone downstream: the exception surfaces inside the engine's call, where
             a runtime's own exception would, so the engine's seam maps it
    hang     the caller's thread sleeps ``hang_s`` (past the stage's deadline), then delegates;
             the stage abandons the call and the thread finishes on its own

``FaultyProxy`` stands in front of a real OpenAI-compatible server and passes its streams
through, replacing one stream, from a given event on, with bad lines or a stall.
``GatedSource`` is a microphone in a quiet room that hears a question whenever the test says.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.server
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from assistant.audio.sinks import AudioSink
from assistant.audio.sources import feed
from assistant.bench.runner import TimedChat
from assistant.clock import StreamClock
from assistant.config import AsrConfig, InputConfig, TtsConfig
from assistant.contracts import AsrResult, ChatEngine, ChatMessage, Synthesizer, Transcriber
from assistant.messages import Message

from .fakes import http_server


@dataclass(frozen=True)
class Fault:
    """One fault to inject, on the next call."""

    mode: str
    """``first``, ``inside`` or ``hang`` (see the module's docstring)."""
    error: Callable[[], Exception] | None = None
    """Makes the exception to raise (``first``, ``inside``)."""
    after: int = 1
    """``inside``: pieces that go downstream before the exception."""
    hang_s: float = 0.0
    """``hang``: how long the caller's thread sleeps before delegating."""

    def raise_it(self) -> None:
        assert self.error is not None
        raise self.error()


class Injector:
    """The armed fault of one wrapper; it fires once, on the next call."""

    def __init__(self) -> None:
        self._armed: Fault | None = None
        self._lock = threading.Lock()
        self.fired: list[Fault] = []

    def arm(self, fault: Fault) -> None:
        with self._lock:
            self._armed = fault

    def take(self) -> Fault | None:
        """The armed fault, disarmed (None when nothing is armed)."""
        with self._lock:
            fault, self._armed = self._armed, None
            if fault is not None:
                self.fired.append(fault)
            return fault

    def start(self) -> Fault | None:
        """At a call's start: raise or hang as armed; return the fault for ``inside`` to act on."""
        fault = self.take()
        if fault is None:
            return None
        if fault.mode == "first":
            fault.raise_it()
        if fault.mode == "hang":
            time.sleep(fault.hang_s)
        return fault if fault.mode == "inside" else None


class _Halt(threading.Event):
    """A stop event the wrapper sets itself (a reply long enough), also set by the caller's."""

    def __init__(self, outer: threading.Event | None) -> None:
        super().__init__()
        self.outer = outer

    def is_set(self) -> bool:
        return super().is_set() or (self.outer is not None and self.outer.is_set())


class _Counted:
    """Passes pieces on, counting them; raises an ``inside`` fault's error after its count."""

    def __init__(self, forward: Callable[[Any], None], fault: Fault | None) -> None:
        self.forward = forward
        self.fault = fault
        self.count = 0

    def __call__(self, piece: Any) -> None:
        self.forward(piece)
        self.count += 1
        if self.fault is not None and self.count >= self.fault.after:
            self.fault.raise_it()


class FaultyTranscriber(Transcriber):
    """A real ASR engine that fails on demand (``first``, ``hang``)."""

    def __init__(self, inner: Transcriber) -> None:
        self.inner = inner
        self.faults = Injector()

    def transcribe(self, pcm: bytes, deadline: float | None = None) -> AsrResult:
        if self.faults.start() is not None:
            raise ValueError("an ASR fault cannot be injected inside the engine: it has no callback")
        return self.inner.transcribe(pcm, deadline)

    def reconfigure(self, config: AsrConfig) -> None:
        self.inner.reconfigure(config)


class FaultyChat(TimedChat):
    """A real chat engine that fails on demand; as the bench's ``TimedChat`` it passes every
    ability the engine declares through. ``max_pieces`` keeps replies short (the reply then
    finishes as ``length``), so a file of many turns stays fast."""

    def __init__(self, inner: ChatEngine, *, max_pieces: int = 0) -> None:
        super().__init__(inner)
        self.max_pieces = max_pieces
        self.faults = Injector()

    def chat(
        self,
        messages: list[ChatMessage],
        on_token: Callable[[str], None],
        stop: threading.Event | None = None,
        *,
        prefill: str = "",
        steer: Callable[[], str | None] | None = None,
    ) -> str:
        counted = _Counted(on_token, self.faults.start())
        halt = _Halt(stop)

        def piece(text: str) -> None:
            counted(text)
            if self.max_pieces and counted.count >= self.max_pieces:
                halt.set()

        finish = super().chat(messages, piece, halt, prefill=prefill, steer=steer)
        cut = finish == "cancelled" and not (stop is not None and stop.is_set())
        return "length" if cut else finish


class FaultySynth(Synthesizer):
    """A real TTS engine that fails on demand."""

    def __init__(self, inner: Synthesizer) -> None:
        self.inner = inner
        self.sample_rate = inner.sample_rate
        self.faults = Injector()

    def synthesize(
        self, text: str, on_audio: Callable[[bytes], None], stop: threading.Event | None = None
    ) -> None:
        self.inner.synthesize(text, _Counted(on_audio, self.faults.start()), stop)

    def reconfigure(self, config: TtsConfig) -> None:
        self.inner.reconfigure(config)


class FaultySink:
    """A real audio sink that fails on demand: ``first`` (the next write raises before writing),
    ``inside`` (the next write hands the device part of its audio, then raises: a device lost
    mid-buffer), ``hang`` (the next write waits ``hang_s`` first). Records what it wrote."""

    def __init__(self, inner: AudioSink) -> None:
        self.inner = inner
        self.faults = Injector()
        self.written: list[bytes] = []

    async def write(self, pcm: bytes, sample_rate: int) -> None:
        fault = self.faults.take()
        if fault is not None and fault.mode == "hang":
            await asyncio.sleep(fault.hang_s)
        elif fault is not None and fault.mode == "inside":
            part = pcm[: len(pcm) // 4 * 2]
            await self.inner.write(part, sample_rate)
            self.written.append(part)
            fault.raise_it()
        elif fault is not None:
            fault.raise_it()
        await self.inner.write(pcm, sample_rate)
        self.written.append(pcm)

    async def turn_done(self) -> None:
        await self.inner.turn_done()

    async def close(self) -> None:
        await self.inner.close()


class GatedSource:
    """Audio in as a live microphone would hear it, one question at a time when the test says
    (``say``), as fast as the stages take it; ``stop`` ends the stream."""

    def __init__(self, config: InputConfig) -> None:
        self.config = config
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def say(self, pcm: bytes) -> None:
        self._queue.put_nowait(pcm)

    def stop(self) -> None:
        self._queue.put_nowait(None)

    async def run(self, outbox: asyncio.Queue[Message], clock: StreamClock) -> None:
        async def pieces() -> AsyncIterator[bytes]:
            while (pcm := await self._queue.get()) is not None:
                yield pcm

        await feed(pieces(), outbox, clock, self.config)


@dataclass(frozen=True)
class StreamFault:
    """What ``FaultyProxy`` does to one stream: from the ``after``-th event on, send ``lines``
    instead of the rest (then the rest, unless ``cut``), or first go silent for ``stall_s``."""

    lines: tuple[bytes, ...] = ()
    after: int = 3
    stall_s: float = 0.0
    cut: bool = False
    """End the stream after ``lines`` (no ``[DONE]``)."""


class FaultyProxy:
    """An OpenAI-compatible server in front of a real one: each request goes to ``upstream``
    and its stream comes back line by line; an armed ``StreamFault`` spoils the next one."""

    def __init__(self, upstream: str) -> None:
        url = upstream.removeprefix("http://")
        self.host, _, rest = url.partition(":")
        port, _, _ = rest.partition("/")
        self.port = int(port)
        self.faults: list[StreamFault] = []
        self.requests = 0
        self.spoiled = 0

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        """Run the proxy; yields its ``.../v1`` URL."""
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                proxy.relay(self)

            def log_message(self, *args: object) -> None:
                pass

        with http_server(Handler) as url:
            yield f"{url}/v1"

    def relay(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        self.requests += 1
        fault = self.faults.pop(0) if self.faults else None
        upstream = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            upstream.request("POST", handler.path, body, {"Content-Type": "application/json"})
            resp = upstream.getresponse()
            handler.send_response(resp.status)
            handler.send_header("Content-Type", resp.getheader("Content-Type") or "text/event-stream")
            handler.end_headers()
            events = 0
            while line := resp.readline():
                if fault is not None and line.startswith(b"data:") and events == fault.after:
                    self.spoiled += 1
                    handler.wfile.flush()
                    time.sleep(fault.stall_s)
                    for bad in fault.lines:
                        handler.wfile.write(bad + b"\n\n")
                    if fault.cut:
                        break
                    fault = None
                events += line.startswith(b"data:")
                handler.wfile.write(line)
                handler.wfile.flush()
        except OSError:
            pass  # the client went away: as a server does, stop sending
        finally:
            upstream.close()
        handler.close_connection = True
