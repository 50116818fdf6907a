"""TTS stage: ``TextChunk`` items in, ``AudioOut`` pieces out as each sentence is synthesized.

The stage times each chunk to its first audio and keeps a ``SynthesisRate``; when a turn's first
chunk starts, it reports ``FirstChunk(turn, expected_ms)``: how long its audio should take, so the
latency budget can tell an answer that will be in time from one that needs an acknowledgement.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from assistant.config import DeadlineConfig
from assistant.contracts import Synthesizer
from assistant.messages import AudioDone, AudioOut, Message, TextChunk, TextDone
from assistant.stages.base import Queue, run_inbox, stream_from_thread
from assistant.turn.latency import SynthesisRate
from assistant.turn.reports import FirstChunk, TurnChannel

_LOGGER = logging.getLogger(__name__)


class TtsStage:
    """Speaks chunks in order; a cancelled turn's synthesis stops between sentences."""

    name = "tts"

    def __init__(
        self,
        engine: Synthesizer,
        channel: TurnChannel,
        deadlines: DeadlineConfig | None = None,
        *,
        rate: SynthesisRate | None = None,
    ) -> None:
        self.engine = engine
        self.channel = channel
        self.deadlines = deadlines or DeadlineConfig()
        self.rate = rate if rate is not None else SynthesisRate()
        """Time to first audio per character, learned from this stage's chunks."""
        self.chunks = 0

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        async def handle(item: Message) -> None:
            if isinstance(item, TextChunk):
                if not self.channel.turns.is_silent(item.turn_id):
                    await self._speak(item, outbox)
            elif isinstance(item, TextDone):
                await outbox.put(AudioDone(item.turn_id))
            else:
                await outbox.put(item)

        await run_inbox(inbox, outbox, self.channel, handle, stage=self.name)

    async def _speak(self, chunk: TextChunk, outbox: Queue) -> None:
        turns = self.channel.turns
        stop = turns.stop_event(chunk.turn_id)
        rate = self.engine.sample_rate

        async def forward(pcm: bytes) -> None:
            if pcm and not turns.is_cancelled(chunk.turn_id):
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

        if chunk.index == 0:
            self.channel.report(FirstChunk(chunk.turn_id, self.rate.estimate_ms(len(chunk.text))))
        await stream_from_thread(work, forward, stop, stage=self.name, stall_s=self.deadlines.tts_s)
        self.chunks += 1
