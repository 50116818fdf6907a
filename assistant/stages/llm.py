"""LLM stage: ``Transcript`` in, streamed ``Token`` items and a ``ReplyDone`` out.

Tokens carry answer text only. A reasoning model's ``<think>`` block is split off by
``reasoning.ThinkFilter`` inside the worker thread and goes to ``on_reasoning`` (the MQTT bridge
may publish it), never downstream, so TTS never hears it. ``llm.reasoning`` picks the mode
(``hidden``, ``skip``, ``budget``; see ``assistant.reasoning``); in ``budget`` mode the block is
closed when the budget is spent and the action ``thinking_cut`` is reported to the turn controller.

Each turn's prompt comes from ``history.History``: the system prompt, the most recent exchanges
of the session that fit, and the new question as user-role data. A question that cannot fit is a
``too_long`` error before any model sees it. After a reply, the engine's ``prime``
evaluates the start of the next prompt while the reply is still being spoken (where it can): the
exchange just finished and the template's opening of the next question, so the next turn reads
only its own words. What the engine can do is declared on it (``contracts.ChatEngine``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from assistant.chat.history import History
from assistant.chat.reasoning import CLOSE_THINK, ThinkBudget, ThinkFilter, ThinkPlan, plan
from assistant.config import DEFAULT_HISTORY_TOKENS, DeadlineConfig, LlmConfig
from assistant.contracts import ChatEngine
from assistant.messages import Message, ReplyDone, Token, Transcript
from assistant.stages.base import Queue, run_inbox, stream_from_thread
from assistant.turn.kinds import Mark
from assistant.turn.reports import ActionTaken, Generated, Marked, Reasoning, Replied, TurnChannel

_LOGGER = logging.getLogger(__name__)
RESERVE_TOKENS = 16
"""Context kept free beyond ``max_tokens`` (a prefill, a closing tag)."""


def is_speakable_piece(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


@dataclass(frozen=True)
class _Out:
    """What the worker thread hands to the loop for one generated piece (or the end)."""

    answer: str = ""
    reasoning: str = ""
    token: bool = False
    """True for a generated piece (counts as a token), False for flushes and actions."""
    action: str = ""
    unclosed: bool = False


def memory_tokens(config: LlmConfig, engine: ChatEngine) -> int:
    """``llm.history_tokens``, or where it is -1 what the engine's model copes with (its
    manifest entry), else ``DEFAULT_HISTORY_TOKENS``."""
    if config.history_tokens >= 0:
        return config.history_tokens
    recommended = engine.history_tokens
    return DEFAULT_HISTORY_TOKENS if recommended is None else int(recommended)


class LlmStage:
    """Generates one reply at a time; a cancelled turn's generation stops at the next token."""

    name = "llm"

    def __init__(
        self,
        engine: ChatEngine,
        config: LlmConfig,
        channel: TurnChannel,
        deadlines: DeadlineConfig | None = None,
        *,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.config = config
        self.channel = channel
        self.deadlines = deadlines or DeadlineConfig()
        self.now = now
        """Monotonic seconds (for the session's idle time and the thinking budget)."""
        self.tokens = 0
        """Pieces generated, over all turns (reasoning included)."""
        self.primed_tokens = 0
        """Tokens of coming prompts evaluated between turns (``_prime``)."""
        self.history = History(
            config.system_prompt,
            engine.count_tokens,
            budget_tokens=memory_tokens(config, engine),
            limit_tokens=config.n_ctx - config.max_tokens - RESERVE_TOKENS,
            idle_s=config.session_idle_s,
        )
        self.last_reasoning = ""
        """The last turn's reasoning text (never spoken, never remembered)."""

    def reconfigure(self, config: LlmConfig) -> None:
        """A reloaded config: the live keys (system prompt, memory, sampling...) apply from the
        next turn; the conversation so far is kept."""
        self.config = config
        self.history.reconfigure(
            config.system_prompt,
            budget_tokens=memory_tokens(config, self.engine),
            limit_tokens=config.n_ctx - config.max_tokens - RESERVE_TOKENS,
            idle_s=config.session_idle_s,
        )

    def plan(self) -> ThinkPlan:
        """How this engine and ``llm.reasoning`` handle thinking."""
        budget = ThinkBudget(self.config.think_budget_tokens, self.config.think_budget_ms)
        return plan(
            self.config.reasoning,
            thinks=self.engine.thinks,
            template_opens=self.engine.template_opens_think,
            budget=budget,
        )

    def messages_for(self, text: str) -> list[dict[str, str]]:
        """The chat for one turn: system prompt, remembered turns, then the words as user data."""
        return self.history.messages_for(text, self.now())

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        async def handle(item: Message) -> None:
            if isinstance(item, Transcript):
                await self._reply(item, outbox)
            else:
                await outbox.put(item)

        await run_inbox(inbox, outbox, self.channel, handle, stage=self.name)

    async def _reply(self, transcript: Transcript, outbox: Queue) -> None:
        turn_id, report, turns = transcript.turn_id, self.channel.report, self.channel.turns
        stop = turns.stop_event(turn_id)
        parts: list[str] = []
        thoughts: list[str] = []
        messages = self.messages_for(transcript.text)
        think = self.plan()

        async def forward(out: _Out) -> None:
            if turns.is_cancelled(turn_id):
                return
            now = self.channel.clock.position_ms()
            if out.token:
                self.tokens += 1
                report(Marked(turn_id, Mark.FIRST_TOKEN, now))
            if out.action:
                report(ActionTaken(turn_id, out.action))
            if out.reasoning:
                thoughts.append(out.reasoning)
                report(Reasoning(turn_id, out.reasoning))
            if out.unclosed:
                _LOGGER.warning("turn %d: the think block never closed; nothing was spoken", turn_id)
            if out.answer:
                if is_speakable_piece(out.answer):
                    report(Marked(turn_id, Mark.FIRST_SPEAKABLE_TOKEN, now))
                parts.append(out.answer)
                report(Generated(turn_id, out.answer))
                await outbox.put(Token(turn_id, out.answer))

        def work(emit: Callable[[_Out], None]) -> str:
            return self._generate(messages, think, emit, stop)

        finish = await stream_from_thread(
            work, forward, stop, stage=self.name, stall_s=self.deadlines.llm_stall_s
        )
        self.last_reasoning = "".join(thoughts)
        if turns.is_cancelled(turn_id):
            return  # a cancelled turn leaves no trace in the history (see history.py)
        answer = "".join(parts)
        self.history.add(transcript.text, answer, self.now())
        report(Replied(turn_id, answer))
        await outbox.put(ReplyDone(turn_id, answer, finish))
        await self._prime()

    async def _prime(self) -> None:
        """Let the engine evaluate the next prompt's start now, where it can (``ChatEngine.prime``)."""
        try:
            self.primed_tokens += await asyncio.to_thread(
                self.engine.prime, self.history.upcoming(self.now())
            )
        except Exception as err:  # optional work: the next turn evaluates it all itself
            _LOGGER.warning("llm: evaluating the next prompt's start failed: %s", err)

    def _generate(
        self,
        messages: list[dict[str, str]],
        think: ThinkPlan,
        emit: Callable[[_Out], None],
        stop: threading.Event,
    ) -> str:
        """Runs in the worker thread: generation, filtering and the thinking budget."""
        flt = ThinkFilter(think.inside)
        start = self.now()

        def on_piece(piece: str) -> None:
            answer, reasoning = flt.push(piece)
            emit(_Out(answer, reasoning, token=True))

        def steer() -> str | None:
            budget = think.budget
            if budget is None or not flt.inside:
                return None
            if not budget.spent(flt.reasoning_pieces, (self.now() - start) * 1000.0):
                return None
            emit(_Out(reasoning=flt.force_close(), action="thinking_cut"))
            return CLOSE_THINK

        finish = self.engine.chat(
            messages, on_piece, stop, prefill=think.prefill, steer=steer if think.budget is not None else None
        )
        answer, reasoning = flt.finish()
        emit(_Out(answer, reasoning, unclosed=flt.unclosed))
        return finish
