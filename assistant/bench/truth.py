"""The bench's turns against the corpus's truth: which turn answered which item, every span from
the pipeline's ``speech_end`` and from ``speech_end_true`` (where speech truly ends in the item,
from its clean signal; DESIGN.md, "Latency: definitions"), paused utterances cut in two, and those
answered whole after a false start.

Pure: turn records and stream positions in, numbers out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from assistant.bench.stream import StreamPosition
from assistant.bench.wer import wer_counts
from assistant.turn.latency import SPANS, TurnRecord, percentile

ANCHORED = tuple(name for name, (start, _) in SPANS.items() if start == "speech_end")
"""Spans measured from ``speech_end``: each is also reported from the true end."""
SHOWN = ("e2e", "first_audio", "endpointing", "transcript", "asr", "llm_first_token", "tts_first_audio")
"""Spans in the table, in order. ``transcript`` is when the final transcript was ready, counted
from the end of speech (the endpoint's wait plus ASR after it)."""


def vad_spans(marks: dict[str, float]) -> dict[str, float]:
    """Every span whose marks are set, ``transcript`` (from ``speech_end``) among them."""
    out = {
        name: round(marks[end] - marks[start], 1)
        for name, (start, end) in SPANS.items()
        if start in marks and end in marks
    }
    if "speech_end" in marks and "transcript" in marks:
        out["transcript"] = round(marks["transcript"] - marks["speech_end"], 1)
    return out


def true_spans(marks: dict[str, float], true_end_ms: float) -> dict[str, float]:
    """The spans of ``vad_spans``, those from ``speech_end`` counted from ``true_end_ms`` instead (the
    others unchanged), and ``lag``: the pipeline's ``speech_end`` minus the true end."""
    out = vad_spans(marks)
    for name in (*ANCHORED, "transcript"):
        end = SPANS[name][1] if name in SPANS else "transcript"
        if end in marks:
            out[name] = round(marks[end] - true_end_ms, 1)
    if "speech_end" in marks:
        out["lag"] = round(marks["speech_end"] - true_end_ms, 1)
    return out


def _in_pause(rec: TurnRecord, pos: StreamPosition) -> bool:
    """Committed (it has an ``endpoint``) with its speech ending inside the item's pause."""
    end = rec.marks.get("speech_end")
    if pos.pause_end_ms is None or end is None or "endpoint" not in rec.marks:
        return False
    return pos.speech_start_ms <= end < pos.pause_end_ms


def was_continued(rec: TurnRecord, continued: Collection[int] = ()) -> bool:
    """A later turn went on with this one's speech (``continued``: the ids the records'
    ``continues`` name): cancelled as it was (action ``continued``), or after it had ended (the
    bench's memory sink takes a short reply whole at once, and the turn ends there)."""
    return "continued" in rec.actions or rec.turn_id in continued


def cut_in_two(rec: TurnRecord, pos: StreamPosition, continued: Collection[int] = ()) -> bool:
    """The turn was committed with its speech ending inside the item's pause, and stood: it took
    the first part of a paused utterance for the whole. A turn the second part continued
    (``was_continued``) did not: the turn that continued it answers both parts."""
    return _in_pause(rec, pos) and not was_continued(rec, continued)


def false_start(rec: TurnRecord, pos: StreamPosition, continued: Collection[int] = ()) -> bool:
    """The turn was committed inside the item's pause and continued by the second part, but only
    after its audio (an acknowledgement, or the first part's answer) had begun: the user heard the
    assistant start, and stop, before the whole utterance was answered."""
    return _in_pause(rec, pos) and was_continued(rec, continued) and "first_audio" in rec.marks


@dataclass
class Matched:
    """The turns that belong to one item."""

    answer: TurnRecord | None = None
    """The turn that answered the item (``answered``): answered, or its answer began playing before
    the next item barged in (its outcome ``cancelled``; its latency counts like any other)."""
    cuts: list[TurnRecord] = field(default_factory=list)
    """Turns committed inside the item's pause that stood (``cut_in_two``)."""
    false_starts: list[TurnRecord] = field(default_factory=list)
    """Turns committed inside the pause, continued after their audio began (``false_start``)."""
    others: list[TurnRecord] = field(default_factory=list)
    """Its other turns: not answered (cancelled by a barge-in, reprompted...), or answered again."""

    @property
    def outcome(self) -> str:
        """The answer's outcome, else that of the item's first other turn, else ``unheard``."""
        if self.answer is not None:
            return self.answer.outcome
        return self.others[0].outcome if self.others else "unheard"


def answered(rec: TurnRecord) -> bool:
    """The turn was answered, or its answer began playing (a later barge-in cancelled the rest)."""
    return rec.outcome == "answered" or "first_answer_audio" in rec.marks


ANSWER_WINDOW_MS = 2000.0
"""A turn answers an item when its ``speech_end`` lies between the item's first sound and this
long after the item's true end (the VAD's end lags by ~0.1-0.3 s, more in babble)."""


def match(records: Iterable[TurnRecord], positions: Sequence[StreamPosition]) -> list[Matched]:
    """Per item, its answer and its cuts: a turn belongs to the item whose speech (from its first
    sound to ``ANSWER_WINDOW_MS`` after its true end) holds the turn's ``speech_end``. A turn
    started by noise alone, in a gap, belongs to no item."""
    out = [Matched() for _ in positions]
    records = list(records)
    continued = {rec.continues for rec in records if rec.continues}
    for rec in records:
        end = rec.marks.get("speech_end")
        if end is None:
            continue
        for pos, found in zip(positions, out, strict=True):
            if not pos.speech_start_ms <= end <= pos.speech_end_ms + ANSWER_WINDOW_MS:
                continue
            if cut_in_two(rec, pos, continued):
                found.cuts.append(rec)
            elif false_start(rec, pos, continued):
                found.false_starts.append(rec)
            elif found.answer is None and answered(rec):
                found.answer = rec
            else:
                found.others.append(rec)
            break
    return out


EARLY_MS = 400.0
"""A turn that starts this long before its item's speech (the VAD's 300 ms preroll and a frame or
three) was started by the noise before it."""


def noise_turns(
    records: Iterable[TurnRecord], positions: Sequence[StreamPosition], noises: Sequence[str]
) -> dict[str, Any]:
    """Turns started by noise alone: those whose speech ends in no item's speech (``match``'s
    window), and those that began more than ``EARLY_MS`` before their item's speech; per the
    noise of the item they ran into (``noises``, one per position), ``gap`` for the others."""
    by: dict[str, int] = {}
    for rec in records:
        start, end = rec.marks.get("speech_start"), rec.marks.get("speech_end")
        if start is None or end is None:
            continue
        where = "gap"
        for pos, kind in zip(positions, noises, strict=True):
            if pos.speech_start_ms <= end <= pos.speech_end_ms + ANSWER_WINDOW_MS:
                where = kind if start < pos.speech_start_ms - EARLY_MS else ""
                break
        if where:
            by[where] = by.get(where, 0) + 1
    return {"turns": sum(by.values()), "by_noise": by}


def stats(values: Sequence[float]) -> dict[str, float]:
    """n, p5, p50, p95, max (ms); just n when empty."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p5": round(percentile(list(values), 5), 1),
        "p50": round(percentile(list(values), 50), 1),
        "p95": round(percentile(list(values), 95), 1),
        "max": round(max(values), 1),
    }


def span_table(
    per_turn: Sequence[dict[str, float]], names: Sequence[str] = SHOWN
) -> dict[str, dict[str, float]]:
    """``stats`` per span name over per-turn span dicts (names with no value left out)."""
    out = {}
    for name in names:
        values = [s[name] for s in per_turn if name in s]
        if values:
            out[name] = stats(values)
    return out


def group_report(results: Sequence[Any], budget_ms: float) -> dict[str, Any]:
    """One group of items (``ItemResult``\\ s): spans from both ends, the first audio over budget
    from both, WER of the pipeline's transcripts."""
    answered = [r for r in results if r.spans is not None]
    over = [r for r in answered if r.spans_true and r.spans_true.get("first_audio", 0.0) > budget_ms]
    counts = wer_counts((r.reference, r.heard) for r in answered)
    return {
        "items": len(results),
        "answered": len(answered),
        "from_speech_end": span_table([r.spans for r in answered]),
        "from_true_end": span_table([r.spans_true for r in answered if r.spans_true]),
        "first_audio_over_budget": sum(r.spans.get("first_audio", 0.0) > budget_ms for r in answered),
        "first_audio_over_budget_true": len(over),
        "wer": round(100 * counts.wer, 2) if counts.ref_words else None,
    }


GROUPS: dict[str, Any] = {
    "intent": lambda r: r.handled_by == "intent",
    "llm": lambda r: r.handled_by == "llm",
    "clean": lambda r: r.noise == "clean",
    "pink": lambda r: r.noise == "pink",
    "babble": lambda r: r.noise == "babble",
    "hum": lambda r: r.noise == "hum",
    "snr20": lambda r: r.snr_db == 20,
    "snr10": lambda r: r.snr_db == 10,
    "normal": lambda r: r.rate == "normal",
    "slow": lambda r: r.rate == "slow",
    "paused": lambda r: r.paused,
}
"""The groups reported apart: who answered (on the answered turns), the noise, its SNR, the rate,
the paused utterances."""


def groups(results: Sequence[Any], budget_ms: float) -> dict[str, dict[str, Any]]:
    """``group_report`` of every group of ``GROUPS`` that has items."""
    out = {}
    for name, belongs in GROUPS.items():
        members = [r for r in results if belongs(r)]
        if members:
            out[name] = group_report(members, budget_ms)
    return out


def paused_report(results: Sequence[Any]) -> dict[str, Any]:
    """How many paused utterances were cut in two, which, and what the cut turn heard; how many
    were answered whole only after a false start (``false_start``)."""
    paused = [r for r in results if r.paused]
    cut = [r for r in paused if r.cut]
    started = [r for r in paused if r.false_start]
    return {
        "items": len(paused),
        "cut": len(cut),
        "cut_items": [{"item": r.item_id, "first_part_heard": r.cut_transcript} for r in cut],
        "false_starts": len(started),
        "false_start_items": [{"item": r.item_id, "first_part_heard": r.cut_transcript} for r in started],
    }
