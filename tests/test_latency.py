"""The latency tracker and budget policy: pure, given times in, decisions out."""

from __future__ import annotations

import pytest

from assistant.text.speakable import looks_complete
from assistant.turn.latency import (
    BudgetPolicy,
    LatencyTracker,
    SynthesisRate,
    TurnRecord,
    percentile,
    span_stats,
)


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
    # ... until the last call: a transcript that slow must not cost the budget
    assert policy.should_ack(_waiting(1000.0, transcript=False), policy.last_call(1000.0))
    done = _waiting(1000.0)
    done.outcome = "cancelled"
    assert not policy.should_ack(done, 1700.0)


def test_no_ack_for_an_answer_expected_in_time_unless_it_slips() -> None:
    policy = BudgetPolicy(budget_ms=800, ack_margin_ms=150, last_call_ms=40)
    assert policy.last_call(1000.0) == 1760.0
    rec = _waiting(1000.0)
    rec.answer_eta_ms = 1780.0  # synthesis of the first chunk ends before the deadline (1800)
    assert not policy.should_ack(rec, 1650.0)  # an acknowledgement now would only delay it
    assert policy.should_ack(rec, 1760.0)  # not heard at the last call: the estimate was wrong
    late = _waiting(1000.0)
    late.answer_eta_ms = 1801.0
    assert policy.should_ack(late, 1650.0)  # expected too late: acknowledge at the due time


def test_synthesis_rate_learns_from_measured_chunks() -> None:
    rate = SynthesisRate(window=3, overhead_chars=5, default_ms_per_char=10.0)
    assert rate.estimate_ms(15) == 200.0  # nothing measured yet: the default
    for chars, ms in ((15, 100.0), (35, 200.0), (5, 1000.0)):  # 5, 5 and 100 ms per char
        rate.observe(chars, ms)
    assert rate.estimate_ms(25) == 150.0  # the median rate, not the outlier
    rate.observe(0, 50.0)  # nothing to learn from an empty text
    assert rate.estimate_ms(25) == 150.0


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
