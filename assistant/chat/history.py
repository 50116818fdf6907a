"""Conversation memory: the turns of one session, fitted into a token budget.

A session is the run of turns with no gap longer than ``idle_s``; after such a gap the
conversation starts afresh. The prompt for a turn is the system prompt, then as many of the most
recent exchanges as fit in ``budget_tokens`` (and in the room the context leaves), then the new
question. The oldest exchanges drop first; the system prompt always stays. A question that does
not fit even alone is refused with ``TooLongError`` (``too_long``) before any model sees it.

What is remembered of a turn: the user's words and the answer as spoken. Reasoning is never kept.
A cancelled turn (barge-in, a discarded speculation, an MQTT cancel) or one that failed leaves no
trace: its question comes back whole in the turn that replaces it, and a half-spoken answer is not
something the model should build on. No clock inside: times are passed in (seconds, monotonic).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from assistant.errors import TooLongError

ChatMessage = dict[str, str]
MESSAGE_OVERHEAD = 8
"""Tokens a chat template adds around one message's content (role markers, newlines), at most."""
UPCOMING_QUESTION_TOKENS = 32 + MESSAGE_OVERHEAD
"""Room ``upcoming`` leaves for the next question: the length of a typical spoken one."""


@dataclass(frozen=True)
class Exchange:
    """One remembered turn."""

    user: str
    """What the user said."""
    reply: str
    """The answer, without reasoning."""
    tokens: int
    """Tokens both take in a prompt, overhead included."""


class History:
    """The current session's exchanges, newest last."""

    def __init__(
        self,
        system_prompt: str,
        count_tokens: Callable[[str], int],
        *,
        budget_tokens: int,
        limit_tokens: int,
        idle_s: float,
        max_exchanges: int = 256,
    ) -> None:
        self.system_prompt = system_prompt
        self.count_tokens = count_tokens
        """Tokens of a text as plain data (the engine's tokenizer, or an estimate)."""
        self.budget_tokens = budget_tokens
        """Tokens of earlier exchanges allowed in a prompt."""
        self.limit_tokens = limit_tokens
        """Tokens a whole prompt may take: the context less the room kept for the reply."""
        self.idle_s = idle_s
        """Seconds of quiet after which a new session starts."""
        self.exchanges: deque[Exchange] = deque(maxlen=max_exchanges)
        self.session = 1
        """Session number, counted from 1."""
        self._last_s: float | None = None
        self._system_tokens = count_tokens(system_prompt) + MESSAGE_OVERHEAD

    def reconfigure(
        self, system_prompt: str, *, budget_tokens: int, limit_tokens: int, idle_s: float
    ) -> None:
        """New settings (a reloaded config); the exchanges so far are kept."""
        self.system_prompt = system_prompt
        self._system_tokens = self.count_tokens(system_prompt) + MESSAGE_OVERHEAD
        self.budget_tokens, self.limit_tokens, self.idle_s = budget_tokens, limit_tokens, idle_s

    def messages_for(self, text: str, now_s: float) -> list[ChatMessage]:
        """The chat for a new turn at ``now_s``; raises ``TooLongError`` if ``text`` cannot fit."""
        if self._last_s is not None and now_s - self._last_s > self.idle_s:
            self.exchanges.clear()
            self.session += 1
        self._last_s = now_s
        room = self.limit_tokens - self._system_tokens
        # Cheap bound first: a token is at least one byte, so 50 kB is not worth tokenizing.
        if len(text.encode("utf-8")) > 16 * max(room, 0):
            raise TooLongError(f"the question is {len(text)} characters long; it cannot fit in the context")
        need = self.count_tokens(text) + MESSAGE_OVERHEAD
        if need > room:
            raise TooLongError(
                f"the question is about {need} tokens; at most {max(room, 0)} fit in the context"
                " (raise llm.n_ctx or ask something shorter)"
            )
        self.exchanges = deque(self._kept(room - need), maxlen=self.exchanges.maxlen)
        return [*self._messages(self.exchanges), {"role": "user", "content": text}]

    def upcoming(self, now_s: float) -> list[ChatMessage]:
        """The messages a short question asked at ``now_s`` would follow (nothing changes):
        what the LLM can evaluate before the question comes."""
        if self._last_s is not None and now_s - self._last_s > self.idle_s:
            return self._messages([])
        room = self.limit_tokens - self._system_tokens - UPCOMING_QUESTION_TOKENS
        return self._messages(self._kept(room))

    def _kept(self, room: int) -> list[Exchange]:
        """The exchanges kept when ``room`` tokens are left for them (before the budget)."""
        room = min(room, self.budget_tokens)
        kept = list(self.exchanges)
        if sum(ex.tokens for ex in kept) > room:
            # Over budget: forget the oldest exchanges down to half the room, not just enough
            # for this turn. The prompt's start then stays the same for the next few turns, so
            # llama.cpp reuses its evaluated prefix instead of re-reading the whole history on
            # every turn once the budget is reached.
            while kept and sum(ex.tokens for ex in kept) > room // 2:
                kept.pop(0)
        return kept

    def _messages(self, exchanges: Iterable[Exchange]) -> list[ChatMessage]:
        messages = [{"role": "system", "content": self.system_prompt}]
        for ex in exchanges:
            messages += [{"role": "user", "content": ex.user}, {"role": "assistant", "content": ex.reply}]
        return messages

    def add(self, user: str, reply: str, now_s: float) -> None:
        """Remember a finished turn (answer text only)."""
        reply = reply.strip()
        if not reply or self.budget_tokens == 0:
            return
        tokens = self.count_tokens(user) + self.count_tokens(reply) + 2 * MESSAGE_OVERHEAD
        self.exchanges.append(Exchange(user, reply, tokens))
        self._last_s = now_s

    def clear(self) -> None:
        """Forget the session (a new one starts with the next turn)."""
        self.exchanges.clear()
        self.session += 1
