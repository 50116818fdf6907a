"""Per-turn latency marks and the per-turn record (the ``--report`` line).

Pure bookkeeping: no clock inside. Callers pass each mark's input-timeline position (ms) and,
where they have it, its ``monotonic_ns``. The names are DESIGN.md's and are used everywhere.
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from assistant.turn.kinds import Mark

_LOGGER = logging.getLogger(__name__)

MARKS = tuple(Mark)
"""The marks, in the order a turn passes them (``turn.kinds.Mark``)."""

SPANS = {
    "e2e": ("speech_end", "first_answer_audio"),
    "first_audio": ("speech_end", "first_audio"),
    "endpointing": ("speech_end", "endpoint"),
    "asr": ("endpoint", "transcript"),
    "llm_first_token": ("transcript", "first_token"),
    "llm_first_speakable": ("transcript", "first_speakable_token"),
    "tts_first_audio": ("first_speakable_token", "first_answer_audio"),
    "reply": ("first_answer_audio", "done"),
}
"""Named spans, ``end - start`` in ms, reported per turn."""


@dataclass
class TurnRecord:
    """Everything measured about one turn."""

    turn_id: int
    marks: dict[str, float] = field(default_factory=dict)
    """Mark name -> input-timeline position, ms."""
    mono_ns: dict[str, int] = field(default_factory=dict)
    """Mark name -> ``time.monotonic_ns()`` where it was measured."""
    transcript: str = ""
    reply: str = ""
    outcome: str = "open"
    """``answered``, ``cancelled``, ``error`` (``open`` until finished)."""
    error: str | None = None
    """The error code, when the turn failed."""
    reply_audio_ms: float = 0.0
    """Duration of the reply audio handed to the sink, ms."""
    actions: list[str] = field(default_factory=list)
    """Budget actions taken on this turn, in order (``ack_played``, ``first_chunk_shortened``...)."""
    answer_ready_ms: float | None = None
    """When the answer's first audio was handed to the output (ms); ``first_answer_audio`` is when
    it starts playing, later when an acknowledgement plays before it."""
    answer_eta_ms: float | None = None
    """When the answer's first audio is expected (input timeline, ms), once its first chunk is
    being synthesized; None before."""
    intent: str | None = None
    """The command matched (``HassTurnOn``...), when the intents stage answered the turn."""
    handled_by: str = "llm"
    """Who answered: ``intent`` (a local command), ``llm``, or ``say`` (text spoken as given)."""
    continues: int = 0
    """The earlier turn whose speech this one continued (``vad.continue_ms``: both parts are
    this turn's utterance); 0: none."""
    listener: Callable[[int, str], None] | None = field(default=None, repr=False, compare=False)
    """Called with (turn id, mark name) each time a mark is set."""

    def mark(self, name: str, position_ms: float, mono_ns: int | None = None) -> bool:
        """Set a mark if not set yet (the first occurrence counts); True if it was set now."""
        if name not in MARKS:
            raise ValueError(f"unknown latency mark {name!r}")
        if name in self.marks:
            return False
        self.marks[name] = position_ms
        if mono_ns is not None:
            self.mono_ns[name] = mono_ns
        if self.listener is not None:
            self.listener(self.turn_id, name)
        return True

    def spans(self) -> dict[str, float]:
        """Every named span whose two marks are set, ms."""
        return {
            name: round(self.marks[end] - self.marks[start], 1)
            for name, (start, end) in SPANS.items()
            if start in self.marks and end in self.marks
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "turn_id": self.turn_id,
            "outcome": self.outcome,
            "error": self.error,
            "transcript": self.transcript,
            "reply": self.reply,
            "marks_ms": {k: round(self.marks[k], 1) for k in MARKS if k in self.marks},
            "spans_ms": self.spans(),
            "reply_audio_ms": round(self.reply_audio_ms, 1),
            "answer_ready_ms": None if self.answer_ready_ms is None else round(self.answer_ready_ms, 1),
            "actions": list(self.actions),
            "intent": self.intent,
            "handled_by": self.handled_by,
            "continues": self.continues,
        }


class LatencyTracker:
    """Holds the records of turns in flight; hands each finished one to ``on_finish``."""

    def __init__(
        self,
        on_finish: Callable[[TurnRecord], None] | None = None,
        on_mark: Callable[[int, str], None] | None = None,
    ) -> None:
        self._open: dict[int, TurnRecord] = {}
        self._on_finish = on_finish
        self._on_mark = on_mark
        self.finished: list[TurnRecord] = []
        """Finished records, oldest first (bounded by ``keep``)."""
        self.keep = 1000
        self.actions: Counter[str] = Counter()
        """How often each budget action fired, over all turns."""

    def record(self, turn_id: int) -> TurnRecord:
        rec = self._open.get(turn_id)
        if rec is None:
            rec = self._open[turn_id] = TurnRecord(turn_id, listener=self._on_mark)
        return rec

    def is_open(self, turn_id: int) -> bool:
        return turn_id in self._open

    def discard(self, turn_id: int) -> None:
        """Forget a turn that never became one (no speech after all)."""
        self._open.pop(turn_id, None)

    def finish(self, turn_id: int, outcome: str, error: str | None = None) -> TurnRecord | None:
        rec = self._open.pop(turn_id, None)
        if rec is None:
            return None
        rec.outcome = outcome
        rec.error = error
        self.finished.append(rec)
        del self.finished[: -self.keep]
        if self._on_finish is not None:
            self._on_finish(rec)
        return rec

    def open_turns(self) -> list[int]:
        return sorted(self._open)

    def action(self, turn_id: int, name: str) -> None:
        """Count a named budget action taken on a turn."""
        self.actions[name] += 1
        if turn_id in self._open:
            self._open[turn_id].actions.append(name)
        _LOGGER.info("turn %d: latency action %s", turn_id, name)

    def stats(self, window: int = 200) -> dict[str, dict[str, float]]:
        """Rolling p50/p95/p99/max per span over the last ``window`` answered turns."""
        recent = [r for r in self.finished if r.outcome == "answered"][-window:]
        return span_stats([r.spans() for r in recent])


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; values need not be sorted."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def span_stats(spans: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """p50/p95/p99/max and count per span name, over per-turn span dicts."""
    out: dict[str, dict[str, float]] = {}
    for name in SPANS:
        values = [s[name] for s in spans if name in s]
        if values:
            out[name] = {
                "n": len(values),
                "p50": round(percentile(values, 50), 1),
                "p95": round(percentile(values, 95), 1),
                "p99": round(percentile(values, 99), 1),
                "max": round(max(values), 1),
            }
    return out


@dataclass(frozen=True)
class BudgetPolicy:
    """When to act on a turn's budget. Pure: positions in, decisions out."""

    budget_ms: float = 800.0
    ack_margin_ms: float = 150.0
    stage_budgets: tuple[tuple[str, float], ...] = ()
    """(span name, ms) pairs: spans over these count as ``over_budget:<span>``."""

    last_call_ms: float = 15.0
    """How long before the deadline a turn whose answer was expected in time is checked again."""

    def ack_due_ms(self, speech_end_ms: float) -> float:
        """Input-timeline position at which to play an acknowledgement if no answer is heard yet."""
        return speech_end_ms + self.budget_ms - self.ack_margin_ms

    def last_call(self, speech_end_ms: float) -> float:
        """The latest position at which an acknowledgement still starts within the budget."""
        return speech_end_ms + self.budget_ms - min(self.last_call_ms, self.ack_margin_ms)

    def should_ack(self, rec: TurnRecord, now_ms: float) -> bool:
        """True if, at ``now_ms``, a turn known to be speech (it has a transcript) is still waiting
        for its first audio past the due time, and its answer is not expected within the budget.

        An answer whose first chunk is being synthesized and is expected before the deadline
        (``rec.answer_eta_ms``) gets no acknowledgement at the due time, since the answer would then
        have to wait for it; if it is still not heard at the last call, it gets one after all.
        A turn whose transcript is still being made at the last call (a slow ASR; noise is
        normally told apart long before) gets one too, so the budget holds on every turn.
        """
        if rec.outcome != "open" or "first_audio" in rec.marks or "speech_end" not in rec.marks:
            return False
        speech_end = rec.marks["speech_end"]
        if "transcript" not in rec.marks:
            return now_ms >= self.last_call(speech_end)
        if now_ms < self.ack_due_ms(speech_end):
            return False
        on_time = rec.answer_eta_ms is not None and rec.answer_eta_ms <= speech_end + self.budget_ms
        return not on_time or now_ms >= self.last_call(speech_end)

    def over_budget(self, rec: TurnRecord) -> list[str]:
        """The stage spans of a finished turn that went over their budgets."""
        spans = rec.spans()
        return [name for name, limit in self.stage_budgets if spans.get(name, 0.0) > limit]


class SynthesisRate:
    """How long synthesis takes to the first audio of a text, learned from the synthesizer's work.

    Time grows with the length of the text plus a fixed cost; both are folded into one rate per
    character of ``chars + overhead_chars``, whose median over the last ``window`` texts is used.
    Pure: callers pass the measured times.
    """

    def __init__(self, window: int = 20, overhead_chars: int = 6, default_ms_per_char: float = 8.0) -> None:
        self.overhead_chars = overhead_chars
        self.default_ms_per_char = default_ms_per_char
        self._rates: deque[float] = deque(maxlen=window)

    def observe(self, chars: int, ms: float) -> None:
        """A text of ``chars`` characters took ``ms`` to its first audio."""
        if chars > 0 and ms >= 0:
            self._rates.append(ms / (chars + self.overhead_chars))

    def estimate_ms(self, chars: int) -> float:
        """Expected time to the first audio of a text of ``chars`` characters."""
        rate = statistics.median(self._rates) if self._rates else self.default_ms_per_char
        return rate * (chars + self.overhead_chars)
