"""TTS stage: ``TextChunk`` items in, ``AudioOut`` pieces out as each sentence is synthesized.

The stage times each chunk to its first audio and keeps a ``SynthesisRate``; when a turn's first
chunk starts, ``on_first_chunk(turn_id, expected_ms)`` says how long its audio should take, so the
latency budget can tell an answer that will be in time from one that needs an acknowledgement.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from assistant.errors import AssistantError
from assistant.messages import AudioDone, AudioOut, Message, TextChunk, TextDone
from assistant.stages.base import Queue, run_inbox, stream_from_thread
from assistant.turn.latency import SynthesisRate
from assistant.turn.registry import Turns

_LOGGER = logging.getLogger(__name__)


class Synthesizer(Protocol):
    sample_rate: int

    def synthesize(
        self, text: str, on_audio: Callable[[bytes], None], stop: threading.Event | None = None
    ) -> None: ...


class TtsStage:
    """Speaks chunks in order; a cancelled turn's synthesis stops between sentences."""

    def __init__(
        self,
        engine: Synthesizer,
        turns: Turns,
        on_error: Callable[[int, AssistantError], None] | None = None,
        *,
        rate: SynthesisRate | None = None,
        on_first_chunk: Callable[[int, float], None] | None = None,
    ) -> None:
        self.engine = engine
        self.turns = turns
        self.on_error = on_error
        self.rate = rate if rate is not None else SynthesisRate()
        """Time to first audio per character, learned from this stage's chunks."""
        self.on_first_chunk = on_first_chunk
        self.chunks = 0

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        async def handle(item: Message) -> None:
            if isinstance(item, TextChunk):
                if not self.turns.is_silent(item.turn_id):
                    await self._speak(item, outbox)
            elif isinstance(item, TextDone):
                await outbox.put(AudioDone(item.turn_id))
            else:
                await outbox.put(item)

        await run_inbox(inbox, outbox, self.turns, handle)

    async def _speak(self, chunk: TextChunk, outbox: Queue) -> None:
        stop = self.turns.stop_event(chunk.turn_id)
        rate = self.engine.sample_rate

        async def forward(pcm: bytes) -> None:
            if pcm and not self.turns.is_cancelled(chunk.turn_id):
                await outbox.put(AudioOut(chunk.turn_id, pcm, rate))

        def work(emit: Callable[[bytes], None]) -> None:
            start = time.perf_counter()
            timed = False

            def first_timed(pcm: bytes) -> None:
                nonlocal timed
                if not timed:
                    timed = True
                    self.rate.observe(len(chunk.text), (time.perf_counter() - start) * 1000)
                emit(pcm)

            self.engine.synthesize(chunk.text, first_timed, stop)

        if chunk.index == 0 and self.on_first_chunk is not None:
            self.on_first_chunk(chunk.turn_id, self.rate.estimate_ms(len(chunk.text)))
        try:
            await stream_from_thread(work, forward, stop)
            self.chunks += 1
        except AssistantError as err:
            _LOGGER.error("turn %d: %s: %s", chunk.turn_id, err.code, err.message)
            if self.on_error is not None:
                self.on_error(chunk.turn_id, err)
