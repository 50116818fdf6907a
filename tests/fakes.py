"""Hand-written fakes for the engines: they record what they got and can be slowed down."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from assistant.clock import StreamClock
from assistant.config import Config
from assistant.contracts import AsrResult, ChatEngine, Synthesizer, Transcriber
from assistant.messages import EndOfStream, Message
from assistant.stages.base import Queue
from assistant.turn.controller import TurnController


class FakeTranscriber(Transcriber):
    """Returns scripted transcripts in order ('' means: no speech)."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.texts = list(texts)
        self.calls: list[int] = []

    def transcribe(self, pcm: bytes, deadline: float | None = None) -> AsrResult:
        self.calls.append(len(pcm))
        return AsrResult(self.texts.pop(0) if self.texts else "", (), len(pcm) / 32)


class FakeChat(ChatEngine):
    """Streams a fixed reply word by word, ``delay`` seconds per token, honouring ``stop``."""

    def __init__(self, reply: str = "The capital of France is Paris.", delay: float = 0.0) -> None:
        self.reply = reply
        self.delay = delay
        self.calls: list[list[dict[str, str]]] = []
        self.emitted: list[str] = []
        self.stopped = threading.Event()
        self.started = threading.Event()

    def chat(
        self,
        messages: list[dict[str, str]],
        on_token: Callable[[str], None],
        stop: threading.Event | None = None,
        *,
        prefill: str = "",
        steer: Callable[[], str | None] | None = None,
    ) -> str:
        self.calls.append(messages)
        self.started.set()
        words = self.reply.split(" ")
        for i, word in enumerate(words):
            if stop is not None and stop.is_set():
                self.stopped.set()
                return "cancelled"
            piece = word if i == 0 else " " + word
            self.emitted.append(piece)
            on_token(piece)
            if self.delay:
                time.sleep(self.delay)
        return "stop"


class FakeSynth(Synthesizer):
    """One int16 sample per character, 100 Hz, so audio length tells which text was spoken."""

    sample_rate = 100

    def __init__(self) -> None:
        self.texts: list[str] = []

    def synthesize(
        self, text: str, on_audio: Callable[[bytes], None], stop: threading.Event | None = None
    ) -> None:
        self.texts.append(text)
        if stop is not None and stop.is_set():
            return
        on_audio(b"\x01\x00" * len(text))


async def run_stage(stage: object, inputs: Iterable[Message], bound: int = 100) -> list[Message]:
    """Feed ``inputs`` and EndOfStream to a stage, return everything it put out before EndOfStream."""
    inbox: Queue = asyncio.Queue()
    outbox: Queue = asyncio.Queue(bound)
    for item in inputs:
        inbox.put_nowait(item)
    inbox.put_nowait(EndOfStream())
    out: list[Message] = []

    async def drain() -> None:
        while not isinstance(item := await outbox.get(), EndOfStream):
            out.append(item)

    await asyncio.wait_for(asyncio.gather(stage.run(inbox, outbox), drain()), 10)  # type: ignore[attr-defined]
    return out


@contextlib.contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on a random loopback port, in a thread; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def controller(config: Config | None = None, *, barge_in: bool = False) -> TurnController:
    """A real turn controller on an unpaced, started clock: what stages report to in stage tests."""
    clock = StreamClock(realtime=False)
    clock.start()
    return TurnController(config or Config(), clock, barge_in=barge_in)
