"""Remote engines over Wyoming: speech recognition and synthesis on a server elsewhere
(wyoming-faster-whisper, wyoming-piper, or another assistant run with ``--wyoming``), behind the
same contracts as the local engines, so the pipeline keeps its speculation, streaming, budget and
acknowledgements while the heavy model runs on a bigger machine.

- ``WyomingTranscriber`` (``asr.engine = "wyoming"``): one connection per utterance:
  ``transcribe`` (with ``asr.language``), ``audio-start``, the audio in ``CHUNK_BYTES`` pieces,
  ``audio-stop``; the answer is the server's ``transcript``.
- ``WyomingSynthesizer`` (``tts.engine = "wyoming"``): one connection per chunk of text:
  ``synthesize`` (with ``tts.remote_voice``), then ``audio-start``, ``audio-chunk``... up to
  ``audio-stop``. Whatever the server sends is handed on as mono int16 at ``sample_rate``
  (resampled as a stream when the server's rate differs): the first piece at once, then pieces of
  at least ``PIECE_MS``.

The protocol is spoken over a plain socket (``assistant.wyoming.client``): the engine API is
synchronous and runs in the stage's worker thread. Failures are the stage's coded errors
(``asr_failed``, ``tts_failed``): the server cannot be reached, stalls (sends nothing for
``IDLE_TIMEOUT_S``), hangs up mid-answer, sends a malformed or oversized event, or answers with
an ``error`` event (its code and text are quoted). A server that could not be reached or stalled
is not asked again for a while (``Backoff``: 1 s, doubling up to 30 s, reset by an answer): a call
in that window fails at once, saying when the server will be tried again, so a dead server costs
no connect timeouts. The stage's deadline (``[deadlines]``) bounds each call as for any engine;
synthesis also stops at the turn's stop event within ``client.POLL_S``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from assistant.config import AsrConfig, TtsConfig, tcp_address
from assistant.contracts import AsrResult, Synthesizer, Transcriber
from assistant.errors import AssistantError, ConfigError, StageError
from assistant.messages import SAMPLE_RATE
from assistant.wyoming.audio import PcmConverter, audio_format
from assistant.wyoming.client import EventSocket, ServerClosed, Stopped
from assistant.wyoming.protocol import EventError, WireEvent

_LOGGER = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.0
"""Seconds to wait for the server to accept a connection."""
IDLE_TIMEOUT_S = 30.0
"""A server that sends nothing for this long has stalled (beyond any stage deadline)."""
PROBE_TIMEOUT_S = 2.0
"""The start-up ``describe`` waits at most this long."""
CHUNK_BYTES = 8192
"""Audio sent per ``audio-chunk`` (256 ms of 16 kHz mono int16)."""
PIECE_MS = 250.0
"""Synthesized audio handed on in pieces of at least this long (the first piece at once)."""
TTS_RATE = 22_050
"""Hz of the audio the remote synthesizer hands on (the rate of the default piper voices)."""


class Backoff:
    """When a failed server may be asked again: ``base_s`` after the first failure, doubling up to
    ``max_s``; an answer resets it. Thread-safe; the clock is passed in for tests."""

    def __init__(
        self, base_s: float = 1.0, max_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.base_s, self.max_s, self.clock = base_s, max_s, clock
        self.failures = 0
        self._retry_at = 0.0
        self._lock = threading.Lock()

    def wait_s(self) -> float:
        """Seconds until the server may be asked again (0: now)."""
        with self._lock:
            return max(0.0, self._retry_at - self.clock())

    def failed(self) -> float:
        """A connection failed or stalled: returns the wait before the next try."""
        with self._lock:
            self.failures += 1
            wait = min(self.max_s, self.base_s * 2.0 ** (self.failures - 1))
            self._retry_at = self.clock() + wait
            return wait

    def succeeded(self) -> None:
        with self._lock:
            self.failures, self._retry_at = 0, 0.0


class RemoteServer:
    """A Wyoming server's address, its backoff, and the mapping of failures to ``stage``'s errors."""

    def __init__(self, stage: str, key: str, url: str) -> None:
        self.stage, self.url = stage, url
        self.host, self.port = tcp_address(key, url)
        self.backoff = Backoff()

    def connect(self, stop: threading.Event | None = None) -> EventSocket:
        """A connection, unless the server failed a moment ago (then a coded error at once)."""
        wait = self.backoff.wait_s()
        if wait > 0:
            raise StageError(
                self.stage,
                f"the Wyoming server at {self.url} failed a moment ago; it is asked again in {wait:.1f} s",
            )
        try:
            return EventSocket(
                self.host, self.port, connect_timeout_s=CONNECT_TIMEOUT_S, idle_timeout_s=IDLE_TIMEOUT_S,
                stop=stop,
            )  # fmt: skip
        except OSError as err:
            raise self.failure(f"cannot reach the Wyoming server at {self.url}: {err}") from err

    def failure(self, message: str) -> StageError:
        """``message`` as the stage's error, the server not asked again for a while."""
        wait = self.backoff.failed()
        return StageError(self.stage, f"{message} (not asked again for {wait:g} s)")

    def call(self, request: Callable[[EventSocket], Any], stop: threading.Event | None = None) -> Any:
        """``request(connection)`` with every failure mapped to a coded error; None when stopped."""
        with self.connect(stop) as conn:
            try:
                result = request(conn)
            except Stopped:
                return None
            except TimeoutError as err:
                raise self.failure(f"the Wyoming server at {self.url} stalled: {err}") from err
            except (ServerClosed, OSError) as err:
                raise self.failure(f"the Wyoming server at {self.url} broke off: {err}") from err
            except EventError as err:
                raise StageError(
                    self.stage,
                    f"the Wyoming server at {self.url} sent a bad event ({err.code}): {err.message}",
                ) from err
            except AssistantError:
                raise
            except Exception as err:  # the seam: nothing foreign leaves a request
                raise StageError(
                    self.stage, f"the request to {self.url} failed: {type(err).__name__}: {err}"
                ) from err
        self.backoff.succeeded()
        return result

    def refused(self, event: WireEvent) -> StageError:
        """The server answered with an ``error`` event."""
        code, text = event.data.get("code"), event.data.get("text")
        return StageError(self.stage, f"the Wyoming server at {self.url} refused: [{code}] {text}")

    def probe(self, service: str) -> None:
        """Ask ``describe`` at start: a server that answers without ``service`` is a config error;
        one that does not answer is only a warning (it may start later)."""
        try:
            with EventSocket(
                self.host, self.port, connect_timeout_s=PROBE_TIMEOUT_S, idle_timeout_s=PROBE_TIMEOUT_S
            ) as conn:
                conn.send(WireEvent("describe"))
                while (event := conn.receive()).type != "info":
                    pass
        except (OSError, ServerClosed, EventError) as err:
            _LOGGER.warning("%s: the Wyoming server at %s does not answer yet: %s", self.stage, self.url, err)
            return
        programs = event.data.get(service)
        if not isinstance(programs, list) or not programs:
            raise ConfigError(f"{self.stage}.url = {self.url!r}: that Wyoming server offers no {service}")


class WyomingTranscriber(Transcriber):
    """Speech to text on a Wyoming server."""

    def __init__(self, config: AsrConfig) -> None:
        self.config = config
        self.server = RemoteServer("asr", "asr.url", config.url)
        self.server.probe("asr")

    def reconfigure(self, config: AsrConfig) -> None:
        """The language applies from the next utterance (the server's address needs a restart)."""
        self.config = config

    def transcribe(self, pcm: bytes, deadline: float | None = None) -> AsrResult:
        """Send one utterance (16 kHz mono int16) and wait for its transcript; blocks (one pass:
        ``deadline`` changes nothing)."""
        fmt = {"rate": SAMPLE_RATE, "width": 2, "channels": 1}

        def request(conn: EventSocket) -> str:
            language = {"language": self.config.language} if self.config.language else {}
            chunks = [
                WireEvent("audio-chunk", fmt, pcm[i : i + CHUNK_BYTES])
                for i in range(0, len(pcm), CHUNK_BYTES)
            ]
            conn.send(WireEvent("transcribe", language), WireEvent("audio-start", fmt), *chunks)
            conn.send(WireEvent("audio-stop"))
            while True:
                event = conn.receive()
                if event.type == "transcript":
                    text = event.data.get("text")
                    return text.strip() if isinstance(text, str) else ""
                if event.type == "error":
                    raise self.server.refused(event)

        self.calls += 1
        text = self.server.call(request) or ""
        return AsrResult(text, audio_ms=len(pcm) / 2 / SAMPLE_RATE * 1000.0)


class _Pieces:
    """A server's audio as mono int16 at ``rate``, handed on in pieces (the first at once)."""

    def __init__(self, rate: int, on_audio: Callable[[bytes], None]) -> None:
        self.on_audio = on_audio
        self.converter = PcmConverter(rate)
        self.piece_bytes = int(rate * PIECE_MS / 1000) * 2
        self.held = bytearray()
        self.sent = False

    def add(self, data: dict[str, Any], pcm: bytes) -> None:
        self.held += self.converter.convert(pcm, audio_format(data, "the server's audio"))
        if not self.sent or len(self.held) >= self.piece_bytes:
            self._hand_on()

    def flush(self) -> None:
        self.held += self.converter.flush()
        self._hand_on()

    def _hand_on(self) -> None:
        if self.held:
            self.sent = True
            self.on_audio(bytes(self.held))
            self.held.clear()


class WyomingSynthesizer(Synthesizer):
    """Text to speech on a Wyoming server."""

    sample_rate = TTS_RATE

    def __init__(self, config: TtsConfig) -> None:
        self.config = config
        self.server = RemoteServer("tts", "tts.url", config.url)
        self.server.probe("tts")

    def reconfigure(self, config: TtsConfig) -> None:
        """The voice name applies from the next chunk (the server's address needs a restart)."""
        self.config = config

    def synthesize(
        self, text: str, on_audio: Callable[[bytes], None], stop: threading.Event | None = None
    ) -> None:
        """Speak ``text``, calling ``on_audio`` with int16 pieces as they arrive; blocks."""
        pieces = _Pieces(self.sample_rate, on_audio)

        def request(conn: EventSocket) -> bool:
            data: dict[str, Any] = {"text": text}
            if self.config.remote_voice:
                data["voice"] = {"name": self.config.remote_voice}
            conn.send(WireEvent("synthesize", data))
            fmt: dict[str, Any] = {}
            while True:
                event = conn.receive()
                if event.type == "audio-start":
                    fmt = event.data
                elif event.type == "audio-chunk":
                    pieces.add({**fmt, **event.data}, event.payload)
                elif event.type == "audio-stop":
                    pieces.flush()
                    return True
                elif event.type == "error":
                    raise self.server.refused(event)

        self.server.call(request, stop)
