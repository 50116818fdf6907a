"""Reasoning models: separate ``<think>...</think>`` from the answer, in a token stream.

``ThinkFilter`` is fed the generated pieces one at a time and returns, per piece, the answer text
and the reasoning text it can already decide on. Tags may be split over several pieces
(``"<th"``, ``"ink>"``); only a tail that could still be the start of a tag is held back, so a
model without think tags streams its answer with at most a ``"<"``-prefix of delay. Pure: no
clock, no I/O.

The variants it handles (see RELIABILITY.md, Models):

- normal: ``<think>reasoning</think>answer``;
- no opening tag, because the template (or our prefill) already put ``<think>\\n`` in the
  prompt: construct with ``inside=True``;
- an empty block: ``<think></think>answer``, or ``<think>\\n\\n</think>\\n\\n`` prefilled (skip);
- a block that never closes: nothing is answer; ``finish()`` then reports ``unclosed``;
- answer only (a model that never thinks): passes straight through.

``ThinkBudget`` is the pure policy of ``budget`` mode: past N reasoning tokens or T ms the block
is closed (``CLOSE_THINK`` appended to the context) and the answer forced.
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"
SKIP_PREFILL = "<think>\n\n</think>\n\n"
"""Prefilled after the generation prompt in ``skip`` mode: an empty, closed think block."""
OPEN_PREFILL = "<think>\n"
"""Prefilled in ``budget`` mode when the template does not open the block itself."""
CLOSE_THINK = "\n</think>\n\n"
"""Appended to the context when the budget is spent: closes the block, the answer follows."""
MODES = ("hidden", "skip", "budget")


def _held_tail(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``tags``."""
    start = text.find("<", max(0, len(text) - max(len(t) for t in tags) + 1))
    while start != -1:
        tail = text[start:]
        if any(t.startswith(tail) and t != tail for t in tags):
            return len(tail)
        start = text.find("<", start + 1)
    return 0


class ThinkFilter:
    """Splits a stream of pieces into (answer, reasoning); tags never appear in either."""

    def __init__(self, inside: bool = False) -> None:
        self.inside = inside
        """True while within a think block."""
        self.thought = inside
        """True once any think block was opened (or the stream began inside one)."""
        self.cut = False
        """True if the block was closed by ``force_close`` (budget spent)."""
        self.unclosed = False
        """Set by ``finish``: the stream ended inside a think block (nothing after it was spoken)."""
        self.reasoning_pieces = 0
        """Pieces pushed while inside a think block (reasoning tokens, for the budget)."""
        self._pending = ""
        self._answer_started = False

    def push(self, piece: str) -> tuple[str, str]:
        """Feed one generated piece; returns ``(answer_text, reasoning_text)`` decided so far."""
        if self.inside:
            self.reasoning_pieces += 1
        text = self._pending + piece
        self._pending = ""
        answer: list[str] = []
        reasoning: list[str] = []
        while text:
            if self.inside:
                at = text.find(CLOSE_TAG)
                if at == -1:
                    keep = _held_tail(text, (CLOSE_TAG,))
                    reasoning.append(text[: len(text) - keep])
                    self._pending = text[len(text) - keep :]
                    break
                reasoning.append(text[:at])
                text = text[at + len(CLOSE_TAG) :]
                self.inside = False
                continue
            opens, closes = text.find(OPEN_TAG), text.find(CLOSE_TAG)
            hits = [(i, tag) for i, tag in ((opens, OPEN_TAG), (closes, CLOSE_TAG)) if i != -1]
            if not hits:
                keep = _held_tail(text, (OPEN_TAG, CLOSE_TAG))
                answer.append(text[: len(text) - keep])
                self._pending = text[len(text) - keep :]
                break
            at, tag = min(hits)
            answer.append(text[:at])
            text = text[at + len(tag) :]
            if tag == OPEN_TAG:  # a stray closing tag in the answer is dropped, never spoken
                self.inside = self.thought = True
        return self._answer("".join(answer)), "".join(reasoning)

    def force_close(self) -> str:
        """The block was closed from outside (``CLOSE_THINK`` appended); returns held reasoning."""
        held, self._pending = (self._pending, "") if self.inside else ("", self._pending)
        if self.inside:
            self.inside, self.cut = False, True
        return held

    def finish(self) -> tuple[str, str]:
        """The stream ended: flush what was held back; sets ``unclosed``."""
        held, self._pending = self._pending, ""
        if self.inside:
            self.unclosed = True
            return "", held
        return self._answer(held), ""

    def _answer(self, text: str) -> str:
        if not self._answer_started:
            text = text.lstrip()  # the blank lines after </think> (or a leading space) are not speech
            self._answer_started = bool(text)
        return text


@dataclass(frozen=True)
class ThinkBudget:
    """``budget`` mode's limit on thinking: tokens, and optionally milliseconds."""

    tokens: int
    """Reasoning tokens allowed."""
    ms: float = 0.0
    """Reasoning time allowed, from the turn's first token; 0 = no time limit."""

    def spent(self, reasoning_tokens: int, elapsed_ms: float) -> bool:
        """True once thinking must stop."""
        return reasoning_tokens >= self.tokens or (self.ms > 0 and elapsed_ms >= self.ms)


@dataclass(frozen=True)
class ThinkPlan:
    """How one turn handles reasoning: what to prefill and where the stream starts."""

    prefill: str
    """Text appended after the generation prompt (assistant side, already evaluated)."""
    inside: bool
    """The generated stream starts inside a think block."""
    budget: ThinkBudget | None
    """Set in ``budget`` mode."""


def plan(mode: str, *, thinks: bool, template_opens: bool, budget: ThinkBudget) -> ThinkPlan:
    """The plan for ``mode`` on a model that ``thinks`` (has think tokens) and whose generation
    prompt already ends inside an open think block (``template_opens``)."""
    if mode not in MODES:
        raise ValueError(f"reasoning mode {mode!r}: choose one of {MODES}")
    if not thinks or mode == "hidden":
        return ThinkPlan("", template_opens, None)
    if mode == "skip":
        return ThinkPlan(CLOSE_THINK if template_opens else SKIP_PREFILL, False, None)
    return ThinkPlan("" if template_opens else OPEN_PREFILL, True, budget)
