"""Transcription and synthesis for one Wyoming client, on the pipeline's own engines.

ASR (``transcribe``, ``audio-start``, ``audio-chunk``..., ``audio-stop`` -> ``transcript``): the
audio is converted to 16 kHz mono int16 as it arrives and kept up to ``wyoming.max_audio_s``
(beyond that it is dropped and one ``error`` ``too_long`` says so); at ``audio-stop`` the engine
transcribes it in a worker thread under ``deadlines.asr_s``. A failed transcription is an
``error`` event with the stage's code, and the connection is then closed: Home Assistant waits
for a ``transcript`` and nothing else, and a closed connection is what it reports as a failure.

TTS: ``synthesize`` (one text) and ``synthesize-start``/``-chunk``.../``-stop`` (text as an LLM
writes it; a ``synthesize`` inside such a stream repeats the whole text for older servers and is
ignored). Text is cut into sentences and clauses as the pipeline cuts replies
(``text/chunking.py``), and each chunk is synthesized as soon as it is complete, by a worker task
of the connection, so that text keeps arriving while audio goes out: ``audio-start`` once, then
``audio-chunk`` pieces of ``SAMPLES_PER_CHUNK`` as each chunk's audio is ready, ``audio-stop`` at
the end (and ``synthesize-stopped`` after a stream). Each chunk's synthesis runs in a worker
thread and is abandoned when it produces nothing for ``deadlines.tts_s``; a failure is an
``error`` event, the rest of the text is skipped, and the end events still follow so a waiting
client finishes. Text over ``wyoming.max_text_chars`` is refused (``too_long``).

One model call per engine at a time from all Wyoming clients (``ServerModels``): the others wait on
the event loop, not in worker threads the pipeline needs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from assistant.config import Config
from assistant.contracts import Synthesizer, Transcriber
from assistant.errors import AssistantError, StageError
from assistant.messages import SAMPLE_RATE
from assistant.stages.base import call_in_thread, stream_from_thread
from assistant.text.chunking import SpeechChunker, split_for_speech
from assistant.wyoming.audio import AudioFormat, PcmConverter, audio_format
from assistant.wyoming.protocol import EventError, WireEvent

SAMPLES_PER_CHUNK = 1024
"""Samples per ``audio-chunk`` sent (46 ms at 22,050 Hz), as wyoming-piper sends them."""
TEXT_QUEUE = 64
"""Chunks of text waiting for synthesis on one connection; a client ahead of that waits."""


@dataclass
class ServerModels:
    """The engines the server offers, and one slot per engine for Wyoming clients."""

    asr: Transcriber | None
    tts: Synthesizer | None
    asr_slot: asyncio.Semaphore
    tts_slot: asyncio.Semaphore


class Link(Protocol):
    """What a service needs of its connection."""

    models: ServerModels

    @property
    def config(self) -> Config:
        """The pipeline's config as now."""

    async def send(self, *events: WireEvent) -> None: ...

    async def refuse(self, code: str, message: str) -> None:
        """Send an ``error`` event (the connection stays)."""


class Transcription:
    """One transcription request: audio kept as 16 kHz mono int16 until ``audio-stop``."""

    def __init__(self, max_s: float) -> None:
        self.max_bytes = int(max_s * SAMPLE_RATE) * 2
        self.pcm = bytearray()
        self.converter = PcmConverter(SAMPLE_RATE)
        self.format: AudioFormat | None = None
        self.cut = False
        """Audio beyond ``max_bytes`` arrived (and was dropped)."""

    def start(self, data: dict[str, object]) -> None:
        self.format = audio_format(data, "audio-start")

    def add(self, data: dict[str, object], payload: bytes) -> bool:
        """Keep one chunk; False when it went over the limit (the first time only)."""
        fmt = audio_format({**self._declared(), **data}, "audio-chunk")
        if self.cut:
            return True
        self.pcm += self.converter.convert(payload, fmt)
        if len(self.pcm) > self.max_bytes:
            del self.pcm[self.max_bytes :]
            self.cut = True
            return False
        return True

    def finish(self) -> bytes:
        """The audio kept, with what the resampler still held (within the limit)."""
        return (bytes(self.pcm) + self.converter.flush())[: self.max_bytes]

    def _declared(self) -> dict[str, object]:
        fmt = self.format
        return {} if fmt is None else {"rate": fmt.rate, "width": fmt.width, "channels": fmt.channels}


async def transcribe(link: Link, request: Transcription) -> None:
    """Transcribe the request's audio and answer; raises the stage's error when that fails."""
    engine = link.models.asr
    if engine is None:
        raise EventError("unsupported", "this server offers no speech recognition")
    pcm = request.finish()
    async with link.models.asr_slot:
        result = await call_in_thread(
            partial(engine.transcribe, pcm), stage="asr", deadline_s=link.config.deadlines.asr_s
        )
    data: dict[str, object] = {"text": result.text}
    if link.config.asr.language:
        data["language"] = link.config.asr.language
    await link.send(WireEvent("transcript", data))


@dataclass(frozen=True)
class _End:
    """The end of one synthesis request."""

    streamed: bool


class Synthesis:
    """A connection's synthesis: text chunks queued, spoken in order by ``run`` (a helper task)."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.queue: asyncio.Queue[str | _End] = asyncio.Queue(TEXT_QUEUE)
        self.chunker: SpeechChunker | None = None
        """The open stream's chunker (``synthesize-start`` .. ``synthesize-stop``)."""
        self.chars = 0
        self.refused = False
        self._started = False
        self._failed = False
        self._timestamp_ms = 0

    @property
    def streaming(self) -> bool:
        return self.chunker is not None

    async def one(self, text: str) -> None:
        """``synthesize`` outside a stream: the whole text, then the end."""
        if await self._accept(len(text)):
            for chunk in split_for_speech(text, self.link.config.chunker):
                await self.queue.put(chunk)
        await self.queue.put(_End(streamed=False))

    def open(self) -> None:
        """``synthesize-start``."""
        self.chunker = SpeechChunker(self.link.config.chunker)
        self.chars, self.refused = 0, False

    async def add(self, text: str) -> None:
        """``synthesize-chunk``: the chunks it completes are queued."""
        if self.chunker is None:
            raise EventError(
                "bad_event", "synthesize-chunk outside a synthesize-start .. synthesize-stop stream"
            )
        if self.refused or not await self._accept(self.chars + len(text)):
            return
        self.chars += len(text)
        for chunk in self.chunker.push(text):
            await self.queue.put(chunk)

    async def close(self) -> None:
        """``synthesize-stop``: the rest of the text, then the end."""
        if self.chunker is None:
            raise EventError("bad_event", "synthesize-stop without synthesize-start")
        chunker, self.chunker = self.chunker, None
        if not self.refused:
            for chunk in chunker.flush():
                await self.queue.put(chunk)
        await self.queue.put(_End(streamed=True))

    async def _accept(self, chars: int) -> bool:
        """True when ``chars`` of text are within the limit; else refused (once per request)."""
        limit = self.link.config.wyoming.max_text_chars
        if chars <= limit:
            return True
        self.refused = True
        await self.link.refuse("too_long", f"text of {chars} characters: at most {limit}")
        return False

    async def run(self) -> None:
        """Speak queued chunks in order until cancelled (the connection's helper task)."""
        while True:
            item = await self.queue.get()
            if isinstance(item, _End):
                await self._finish(item.streamed)
            elif not self._failed:
                try:
                    await self._speak(item)
                except AssistantError as err:
                    self._failed = True
                    await self.link.refuse(err.code, err.message)

    async def _speak(self, text: str) -> None:
        engine = self.link.models.tts
        if engine is None:
            raise EventError("unsupported", "this server offers no speech synthesis")
        stop = threading.Event()
        rate = engine.sample_rate

        async def forward(pcm: bytes) -> None:
            await self._audio(pcm, rate)

        def work(emit: Callable[[bytes], None]) -> None:
            engine.synthesize(text, emit, stop)

        async with self.link.models.tts_slot:
            try:
                await stream_from_thread(
                    work, forward, stop, stage="tts", stall_s=self.link.config.deadlines.tts_s
                )
            except AssistantError:
                raise
            except Exception as err:  # the engine's seam did not map it
                raise StageError("tts", f"synthesis failed: {type(err).__name__}: {err}") from err

    async def _audio(self, pcm: bytes, rate: int) -> None:
        fmt = {"rate": rate, "width": 2, "channels": 1}
        events = []
        if not self._started:
            self._started = True
            events.append(WireEvent("audio-start", {**fmt, "timestamp": 0}))
        step = SAMPLES_PER_CHUNK * 2
        for i in range(0, len(pcm), step):
            piece = pcm[i : i + step]
            events.append(WireEvent("audio-chunk", {**fmt, "timestamp": self._timestamp_ms}, piece))
            self._timestamp_ms += len(piece) * 1000 // (2 * rate)
        await self.link.send(*events)

    async def _finish(self, streamed: bool) -> None:
        events = []
        if self._started or not streamed:
            events.append(WireEvent("audio-stop", {"timestamp": self._timestamp_ms}))
        if streamed:
            events.append(WireEvent("synthesize-stopped"))
        self._started = self._failed = False
        self._timestamp_ms = 0
        await self.link.send(*events)
