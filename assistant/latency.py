"""Per-turn latency marks and the per-turn record (the ``--report`` line).

Pure bookkeeping: no clock inside. Callers pass each mark's input-timeline position (ms) and,
where they have it, its ``monotonic_ns``. The names are DESIGN.md's and are used everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MARKS = (
    "speech_start",
    "speech_end",
    "endpoint",
    "transcript",
    "first_token",
    "first_speakable_token",
    "first_audio",
    "first_answer_audio",
    "done",
)

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
