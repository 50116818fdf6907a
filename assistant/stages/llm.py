"""LLM stage: ``Transcript`` in, streamed ``Token`` items and a ``ReplyDone`` out.

Tokens carry answer text only. A reasoning model's ``<think>`` block is split off by
``reasoning.ThinkFilter`` inside the worker thread and goes to ``on_reasoning`` (the MQTT bridge
may publish it), never downstream, so TTS never hears it. ``llm.reasoning`` picks the mode
(``hidden``, ``skip``, ``budget``; see ``assistant.reasoning``); in ``budget`` mode the block is
closed when the budget is spent and the action ``thinking_cut`` is reported through
``on_action`` (by default the latency tracker's ``action``).

Each turn's prompt comes from ``history.History``: the system prompt, the most recent exchanges
of the session that fit, and the new question as user-role data. A question that cannot fit is a
``too_long`` error before any model sees it. After a reply, an engine that can (``prime``)
evaluates the start of the next prompt while the reply is still being spoken: the exchange just
finished and the template's opening of the next question, so the next turn reads only its own
words.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from assistant.chat.history import History, estimate_tokens
from assistant.chat.reasoning import CLOSE_THINK, ThinkBudget, ThinkFilter, ThinkPlan, plan
from assistant.clock import StreamClock
from assistant.config import DEFAULT_HISTORY_TOKENS, LlmConfig
from assistant.errors import AssistantError
from assistant.messages import Message, ReplyDone, Token, Transcript
from assistant.stages.base import Queue, run_inbox, stream_from_thread
from assistant.turn.latency import LatencyTracker
from assistant.turn.registry import Turns

_LOGGER = logging.getLogger(__name__)
RESERVE_TOKENS = 16
"""Context kept free beyond ``max_tokens`` (a prefill, a closing tag)."""


class ChatEngine(Protocol):
    """The least an LLM engine offers: a streamed chat reply, stoppable."""

    def chat(
        self,
        messages: list[dict[str, str]],
        on_token: Callable[[str], None],
        stop: threading.Event | None = None,
    ) -> str: ...


class ReasoningEngine(ChatEngine, Protocol):
    """An engine that also takes a prefill and a steering hook (``LlamaEngine``).

    Detected by its ``thinks`` attribute; its ``chat`` accepts the keyword arguments
    ``prefill: str`` and ``steer: Callable[[], str | None]``.
    """

    thinks: bool
    """The model has think tokens."""
    template_opens_think: bool
    """Its generation prompt already opens a think block."""

    def count_tokens(self, text: str) -> int: ...


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


def memory_tokens(config: LlmConfig, engine: object) -> int:
    """``llm.history_tokens``, or where it is -1 what the engine's model copes with (its
    manifest entry), else ``DEFAULT_HISTORY_TOKENS``."""
    if config.history_tokens >= 0:
        return config.history_tokens
    recommended = getattr(engine, "history_tokens", None)
    return DEFAULT_HISTORY_TOKENS if recommended is None else int(recommended)


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
        *,
        on_reasoning: Callable[[int, str], None] | None = None,
        on_action: Callable[[int, str], None] | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.config = config
        self.turns = turns
        self.tracker = tracker
        self.clock = clock
        self.on_token = on_token
        self.on_error = on_error
        self.on_reasoning = on_reasoning
        """Called with (turn id, reasoning text) as the model thinks."""
        self.on_action = on_action or tracker.action
        """Called with (turn id, action name), e.g. ``thinking_cut``."""
        self.now = now
        """Monotonic seconds (for the session's idle time and the thinking budget)."""
        self.tokens = 0
        """Pieces generated, over all turns (reasoning included)."""
        self.primed_tokens = 0
        """Tokens of coming prompts evaluated between turns (``_prime``)."""
        count = getattr(engine, "count_tokens", None)
        self.history = History(
            config.system_prompt,
            count if callable(count) else estimate_tokens,
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
        thinks = bool(getattr(self.engine, "thinks", False))
        opens = bool(getattr(self.engine, "template_opens_think", False))
        budget = ThinkBudget(self.config.think_budget_tokens, self.config.think_budget_ms)
        return plan(self.config.reasoning, thinks=thinks, template_opens=opens, budget=budget)

    def messages_for(self, text: str) -> list[dict[str, str]]:
        """The chat for one turn: system prompt, remembered turns, then the words as user data."""
        return self.history.messages_for(text, self.now())

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        async def handle(item: Message) -> None:
            if isinstance(item, Transcript):
                await self._reply(item, outbox)
            else:
                await outbox.put(item)

        await run_inbox(inbox, outbox, self.turns, handle)

    def _fail(self, turn_id: int, err: AssistantError) -> None:
        _LOGGER.error("turn %d: %s: %s", turn_id, err.code, err.message)
        if self.on_error is not None:
            self.on_error(turn_id, err)

    async def _reply(self, transcript: Transcript, outbox: Queue) -> None:
        turn_id = transcript.turn_id
        rec = self.tracker.record(turn_id)
        stop = self.turns.stop_event(turn_id)
        parts: list[str] = []
        thoughts: list[str] = []
        try:
            messages = self.messages_for(transcript.text)
        except AssistantError as err:
            self._fail(turn_id, err)
            return
        think = self.plan()

        async def forward(out: _Out) -> None:
            if self.turns.is_cancelled(turn_id):
                return
            now = self.clock.position_ms()
            if out.token:
                self.tokens += 1
                rec.mark("first_token", now)
            if out.action:
                self.on_action(turn_id, out.action)
            if out.reasoning:
                thoughts.append(out.reasoning)
                if self.on_reasoning is not None:
                    self.on_reasoning(turn_id, out.reasoning)
            if out.unclosed:
                _LOGGER.warning("turn %d: the think block never closed; nothing was spoken", turn_id)
            if out.answer:
                if is_speakable_piece(out.answer):
                    rec.mark("first_speakable_token", now)
                parts.append(out.answer)
                token = Token(turn_id, out.answer)
                if self.on_token is not None:
                    self.on_token(token)
                await outbox.put(token)

        def work(emit: Callable[[_Out], None]) -> str:
            return self._generate(messages, think, emit, stop)

        try:
            finish = await stream_from_thread(work, forward, stop)
        except AssistantError as err:
            self._fail(turn_id, err)
            return
        self.last_reasoning = "".join(thoughts)
        if self.turns.is_cancelled(turn_id):
            return  # a cancelled turn leaves no trace in the history (see history.py)
        answer = "".join(parts)
        self.history.add(transcript.text, answer, self.now())
        rec.reply = answer.strip()
        await outbox.put(ReplyDone(turn_id, answer, finish))
        await self._prime()

    async def _prime(self) -> None:
        """Let the engine evaluate the next prompt's start now (``LlamaEngine.prime``)."""
        prime = getattr(self.engine, "prime", None)
        if prime is None:
            return
        try:
            self.primed_tokens += await asyncio.to_thread(prime, self.history.upcoming(self.now()))
        except AssistantError as err:  # the next turn evaluates it all itself
            _LOGGER.warning("llm: %s", err.message)

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

        if hasattr(self.engine, "thinks"):
            finish = self.engine.chat(  # type: ignore[call-arg]
                messages,
                on_piece,
                stop,
                prefill=think.prefill,
                steer=steer if think.budget is not None else None,
            )
        else:
            finish = self.engine.chat(messages, on_piece, stop)
        answer, reasoning = flt.finish()
        emit(_Out(answer, reasoning, unclosed=flt.unclosed))
        return finish
