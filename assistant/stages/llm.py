"""LLM stage: ``Transcript`` in, streamed ``Token`` items and a ``ReplyDone`` out."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from ..clock import StreamClock
from ..config import LlmConfig
from ..errors import AssistantError
from ..latency import LatencyTracker
from ..messages import Message, ReplyDone, Token, Transcript
from .base import Queue, Turns, run_inbox, stream_from_thread

_LOGGER = logging.getLogger(__name__)


class ChatEngine(Protocol):
    def chat(
        self,
        messages: list[dict[str, str]],
        on_token: Callable[[str], None],
        stop: threading.Event | None = None,
    ) -> str: ...


def is_speakable_piece(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


class LlmStage:
    """Generates one reply at a time; a cancelled turn's generation stops at the next token."""

    def __init__(
        self,
        engine: ChatEngine,
        config: LlmConfig,
        turns: Turns,
        tracker: LatencyTracker,
        clock: StreamClock,
        on_token: Callable[[Token], None] | None = None,
        on_error: Callable[[int, AssistantError], None] | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.turns = turns
        self.tracker = tracker
        self.clock = clock
        self.on_token = on_token
        self.on_error = on_error
        self.tokens = 0

    def messages_for(self, text: str) -> list[dict[str, str]]:
        """The chat for one turn: the system prompt, then the user's words as user-role data."""
        return [
            {"role": "system", "content": self.config.system_prompt},
            {"role": "user", "content": text},
        ]

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        async def handle(item: Message) -> None:
            if isinstance(item, Transcript):
                await self._reply(item, outbox)
            else:
                await outbox.put(item)

        await run_inbox(inbox, outbox, self.turns, handle)

    async def _reply(self, transcript: Transcript, outbox: Queue) -> None:
        turn_id = transcript.turn_id
        rec = self.tracker.record(turn_id)
        stop = self.turns.stop_event(turn_id)
        parts: list[str] = []

        async def forward(piece: str) -> None:
            if self.turns.is_cancelled(turn_id):
                return
            self.tokens += 1
            now = self.clock.position_ms()
            rec.mark("first_token", now)
            if is_speakable_piece(piece):
                rec.mark("first_speakable_token", now)
            parts.append(piece)
            token = Token(turn_id, piece)
            if self.on_token is not None:
                self.on_token(token)
            await outbox.put(token)

        def work(emit: Callable[[str], None]) -> str:
            return self.engine.chat(self.messages_for(transcript.text), emit, stop)

        try:
            finish = await stream_from_thread(work, forward, stop)
        except AssistantError as err:
            _LOGGER.error("turn %d: %s: %s", turn_id, err.code, err.message)
            if self.on_error is not None:
                self.on_error(turn_id, err)
            return
        if self.turns.is_cancelled(turn_id):
            return
        rec.reply = "".join(parts).strip()
        await outbox.put(ReplyDone(turn_id, "".join(parts), finish))
