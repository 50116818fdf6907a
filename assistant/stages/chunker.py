"""Chunker stage: ``Token`` items in, speakable ``TextChunk`` items out, clause by clause."""

from __future__ import annotations

from collections.abc import Callable

from assistant.config import ChunkerConfig
from assistant.messages import Message, ReplyDone, TextChunk, TextDone, Token
from assistant.stages.base import Queue, run_inbox
from assistant.text.chunking import SpeechChunker
from assistant.turn.registry import Turns


class ChunkerStage:
    """Cuts each turn's token stream at natural breaks, so TTS can start on the first clause."""

    def __init__(
        self,
        config: ChunkerConfig,
        turns: Turns,
        on_chunk: Callable[[TextChunk], None] | None = None,
        on_reply: Callable[[ReplyDone], None] | None = None,
    ) -> None:
        self.config = config
        self.turns = turns
        self.on_chunk = on_chunk
        self.on_reply = on_reply
        self._chunkers: dict[int, SpeechChunker] = {}

    def _chunker(self, turn_id: int) -> SpeechChunker:
        chunker = self._chunkers.get(turn_id)
        if chunker is None:
            chunker = self._chunkers[turn_id] = SpeechChunker(self.config)
        return chunker

    async def _emit(self, turn_id: int, texts: list[str], outbox: Queue) -> None:
        first = self._chunker(turn_id).chunk_count - len(texts)
        for offset, text in enumerate(texts):
            chunk = TextChunk(turn_id, text, first + offset)
            if self.on_chunk is not None:
                self.on_chunk(chunk)
            await outbox.put(chunk)

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        async def handle(item: Message) -> None:
            if isinstance(item, Token):
                await self._emit(item.turn_id, self._chunker(item.turn_id).push(item.text), outbox)
            elif isinstance(item, ReplyDone):
                await self._emit(item.turn_id, self._chunker(item.turn_id).flush(), outbox)
                self._chunkers.pop(item.turn_id, None)
                if self.on_reply is not None:
                    self.on_reply(item)
                await outbox.put(TextDone(item.turn_id))
            else:
                await outbox.put(item)

        await run_inbox(inbox, outbox, self.turns, handle)
