"""Chunker stage: ``Token`` items in, speakable ``TextChunk`` items out, clause by clause."""

from __future__ import annotations

from assistant.config import ChunkerConfig
from assistant.messages import Message, ReplyDone, TextChunk, TextDone, Token
from assistant.stages.base import Queue, run_inbox
from assistant.text.chunking import SpeechChunker
from assistant.turn.reports import ChunkReady, ReplyComplete, TurnChannel


class ChunkerStage:
    """Cuts each turn's token stream at natural breaks, so TTS can start on the first clause."""

    name = "chunker"

    def __init__(self, config: ChunkerConfig, channel: TurnChannel) -> None:
        self.config = config
        self.channel = channel
        self._chunkers: dict[int, SpeechChunker] = {}

    def _chunker(self, turn_id: int) -> SpeechChunker:
        chunker = self._chunkers.get(turn_id)
        if chunker is None:
            for gone in [t for t in self._chunkers if self.channel.turns.is_cancelled(t)]:
                del self._chunkers[gone]  # a cancelled turn's ReplyDone never comes
            chunker = self._chunkers[turn_id] = SpeechChunker(self.config)
        return chunker

    async def _emit(self, turn_id: int, texts: list[str], outbox: Queue) -> None:
        first = self._chunker(turn_id).chunk_count - len(texts)
        for offset, text in enumerate(texts):
            self.channel.report(ChunkReady(turn_id, text, first + offset))
            await outbox.put(TextChunk(turn_id, text, first + offset))

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        async def handle(item: Message) -> None:
            if isinstance(item, Token):
                await self._emit(item.turn_id, self._chunker(item.turn_id).push(item.text), outbox)
            elif isinstance(item, ReplyDone):
                await self._emit(item.turn_id, self._chunker(item.turn_id).flush(), outbox)
                self._chunkers.pop(item.turn_id, None)
                self.channel.report(ReplyComplete(item.turn_id, item.text, item.finish_reason))
                await outbox.put(TextDone(item.turn_id))
            else:
                await outbox.put(item)

        await run_inbox(inbox, outbox, self.channel, handle, stage=self.name)
