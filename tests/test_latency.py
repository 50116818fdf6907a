"""The latency tracker and budget policy: pure, given times in, decisions out."""

from __future__ import annotations

import pytest

from assistant.latency import BudgetPolicy, LatencyTracker, TurnRecord, percentile, span_stats
from assistant.text import looks_complete


def test_percentile_interpolates() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)
    assert percentile([5.0], 99) == 5.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_spans_and_first_mark_wins() -> None:
    rec = TurnRecord(1)
    assert rec.mark("speech_end", 1000.0)
    assert rec.mark("first_answer_audio", 1450.0)
    assert not rec.mark("first_answer_audio", 1900.0)
    rec.mark("first_audio", 1300.0)
    assert rec.spans() == {"e2e": 450.0, "first_audio": 300.0}
    with pytest.raises(ValueError):
        rec.mark("lunch", 1.0)


def test_rolling_stats_over_answered_turns() -> None:
    tracker = LatencyTracker()
    for turn_id, e2e in enumerate([400.0, 500.0, 600.0, 2000.0], start=1):
        rec = tracker.record(turn_id)
        rec.mark("speech_end", 0.0)
        rec.mark("first_answer_audio", e2e)
        tracker.finish(turn_id, "answered" if e2e < 2000 else "cancelled")
    stats = tracker.stats()
    assert stats["e2e"]["n"] == 3 and stats["e2e"]["p50"] == 500.0 and stats["e2e"]["max"] == 600.0
    assert span_stats([]) == {}


def test_actions_are_counted_and_kept_on_the_turn() -> None:
    tracker = LatencyTracker()
    tracker.record(7)
    tracker.action(7, "ack_played")
    tracker.action(7, "first_chunk_shortened")
    rec = tracker.finish(7, "answered")
    assert rec is not None and rec.to_json()["actions"] == ["ack_played", "first_chunk_shortened"]
    assert tracker.actions == {"ack_played": 1, "first_chunk_shortened": 1}


def _waiting(speech_end: float, *, transcript: bool = True) -> TurnRecord:
    rec = TurnRecord(1)
    rec.mark("speech_end", speech_end)
    if transcript:
        rec.mark("transcript", speech_end + 100)
    return rec


def test_ack_exactly_when_the_answer_would_miss_the_deadline() -> None:
    policy = BudgetPolicy(budget_ms=800, ack_margin_ms=150)
    assert policy.ack_due_ms(1000.0) == 1650.0
    rec = _waiting(1000.0)
    assert not policy.should_ack(rec, 1649.0)  # not due yet
    assert policy.should_ack(rec, 1650.0)  # due, nothing heard
    rec.mark("first_audio", 1600.0)
    assert not policy.should_ack(rec, 1700.0)  # the answer made it
    assert not policy.should_ack(_waiting(1000.0, transcript=False), 1700.0)  # not known to be speech
    done = _waiting(1000.0)
    done.outcome = "cancelled"
    assert not policy.should_ack(done, 1700.0)


def test_stage_budgets() -> None:
    policy = BudgetPolicy(stage_budgets=(("asr", 150.0), ("llm_first_token", 250.0)))
    rec = TurnRecord(1)
    for name, at in (("endpoint", 0.0), ("transcript", 200.0), ("first_token", 300.0)):
        rec.mark(name, at)
    assert policy.over_budget(rec) == ["asr"]


@pytest.mark.parametrize(
    ("text", "complete"),
    [
        ("What is the capital of France?", True),
        ("Turn on the lights.", True),
        ("What is the", False),
        ("What is the.", False),
        ("Tell me about", False),
        ("Hello", False),
        ("Um.", False),
        ("So...", False),
        ("", False),
    ],
)
def test_looks_complete(text: str, complete: bool) -> None:
    assert looks_complete(text) is complete
