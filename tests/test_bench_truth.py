"""The bench's spans from the true end of speech, and paused utterances cut in two, on made-up turns."""

from __future__ import annotations

import pytest

from assistant.bench import truth
from assistant.bench.runner import ItemResult
from assistant.bench.stream import StreamPosition
from assistant.turn.latency import TurnRecord

MARKS = {
    "speech_start": 300.0,
    "speech_end": 1100.0,
    "endpoint": 1400.0,
    "transcript": 1500.0,
    "first_token": 1600.0,
    "first_speakable_token": 1650.0,
    "first_audio": 1700.0,
    "first_answer_audio": 1900.0,
    "done": 3000.0,
}


def _record(turn_id: int, marks: dict[str, float], text: str = "", outcome: str = "answered") -> TurnRecord:
    return TurnRecord(turn_id, marks=dict(marks), transcript=text, outcome=outcome)


def test_spans_from_the_true_end_start_where_speech_truly_ended() -> None:
    vad = truth.vad_spans(MARKS)
    true = truth.true_spans(MARKS, true_end_ms=1000.0)
    assert (vad["e2e"], true["e2e"]) == (800.0, 900.0)
    assert (vad["first_audio"], true["first_audio"]) == (600.0, 700.0)
    assert (vad["endpointing"], true["endpointing"]) == (300.0, 400.0)
    assert (vad["transcript"], true["transcript"]) == (400.0, 500.0)
    assert true["lag"] == 100.0 and "lag" not in vad
    # spans that do not start at the end of speech are the same from either end
    for span in ("asr", "llm_first_token", "tts_first_audio", "reply"):
        assert vad[span] == true[span]
    assert (true["asr"], true["llm_first_token"], true["tts_first_audio"]) == (100.0, 100.0, 250.0)
    # a VAD that ends early (the fine end before the true one) gives a negative lag
    assert truth.true_spans(MARKS, true_end_ms=1120.0)["lag"] == -20.0


def test_a_turn_without_its_answer_has_only_the_spans_it_reached() -> None:
    marks = {k: MARKS[k] for k in ("speech_start", "speech_end", "endpoint", "transcript")}
    true = truth.true_spans(marks, true_end_ms=1050.0)
    assert set(true) == {"endpointing", "asr", "transcript", "lag"}
    assert true["endpointing"] == 350.0


PAUSED = StreamPosition(
    "01-voice-clean", start_ms=0.0, speech_start_ms=300.0, speech_end_ms=3000.0, end_ms=3300.0,
    pause_start_ms=1200.0, pause_end_ms=1800.0,
)  # fmt: skip
PLAIN = StreamPosition(
    "02-voice-pink10", start_ms=7300.0, speech_start_ms=7600.0, speech_end_ms=9000.0, end_ms=9300.0
)


def test_a_turn_committed_inside_the_pause_cut_the_utterance_in_two() -> None:
    first_part = _record(
        1, {"speech_start": 310.0, "speech_end": 1290.0, "endpoint": 1590.0}, "Set a timer for"
    )
    assert truth.cut_in_two(first_part, PAUSED)
    # a speculation voided when speech went on was never committed: no endpoint, no cut
    voided = _record(2, {"speech_start": 310.0, "speech_end": 1290.0}, "Set a timer for", outcome="cancelled")
    assert not truth.cut_in_two(voided, PAUSED)
    whole = _record(
        3, {"speech_start": 310.0, "speech_end": 3090.0, "endpoint": 3390.0}, "Set a timer for ten"
    )
    assert not truth.cut_in_two(whole, PAUSED)
    assert not truth.cut_in_two(first_part, PLAIN)  # no pause, nothing to cut


def test_match_gives_each_item_its_answer_and_its_cuts() -> None:
    cut = _record(1, {"speech_end": 1290.0, "endpoint": 1590.0}, "Set a timer for")
    second = _record(2, {"speech_end": 3080.0, "endpoint": 3380.0}, "ten minutes")
    noise_turn = _record(3, {"speech_end": 6000.0, "endpoint": 6300.0}, "hmm", outcome="answered")
    plain = _record(4, {"speech_end": 9090.0, "endpoint": 9390.0}, "what is two plus three")
    found = truth.match([cut, second, noise_turn, plain], [PAUSED, PLAIN])
    assert found[0].cuts == [cut] and found[0].answer is second
    assert found[1].cuts == [] and found[1].answer is plain
    # a turn started by noise in the gap answers nothing, even when it was answered
    assert found[0].answer is not noise_turn and found[1].answer is not noise_turn
    assert [f.answer for f in truth.match([noise_turn], [PAUSED, PLAIN])] == [None, None]
    assert [f.outcome for f in found] == ["answered", "answered"]
    # an item whose turn was cancelled before its answer began says so
    barged = _record(5, {"speech_end": 9090.0, "endpoint": 9390.0}, "what is", outcome="cancelled")
    assert [f.outcome for f in truth.match([barged], [PAUSED, PLAIN])] == ["unheard", "cancelled"]
    # one whose answer began playing answered it, however slowly: the next item's barge-in
    # cancelled only the rest, and its latency counts (not left out as if nothing was heard)
    marks = {"speech_end": 9090.0, "endpoint": 9390.0, "first_answer_audio": 12400.0}
    late = _record(6, marks, "what is two plus three", outcome="cancelled")
    (_, found_late) = truth.match([late], [PAUSED, PLAIN])
    assert found_late.answer is late and found_late.outcome == "cancelled"


def _result(item: str, noise: str, first_vad: float, first_true: float, **kw: object) -> ItemResult:
    return ItemResult(
        item, "what time is it", heard="what time is it", noise=noise,
        spans={"e2e": first_vad, "first_audio": first_vad},
        spans_true={"e2e": first_true, "first_audio": first_true, "lag": first_true - first_vad},
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_groups_report_both_ends_over_budget_and_wer() -> None:
    results = [
        _result("a", "clean", 700.0, 780.0, handled_by="intent"),
        _result("b", "babble", 760.0, 860.0, handled_by="llm", snr_db=10.0),
        _result("c", "babble", 300.0, 420.0, handled_by="llm", snr_db=10.0, paused=True, cut=True,
                cut_transcript="what time"),
        ItemResult("d", "what is the date", noise="hum", snr_db=20.0),  # never answered
    ]  # fmt: skip
    results[1].heard = "what time"  # one word of four missed
    groups = truth.groups(results, budget_ms=800.0)
    assert set(groups) == {"intent", "llm", "clean", "babble", "hum", "snr10", "snr20", "normal", "paused"}
    babble = groups["babble"]
    assert (babble["items"], babble["answered"]) == (2, 2)
    assert babble["from_speech_end"]["e2e"]["max"] == 760.0 and babble["from_true_end"]["e2e"]["max"] == 860.0
    assert (babble["first_audio_over_budget"], babble["first_audio_over_budget_true"]) == (0, 1)
    assert babble["wer"] == pytest.approx(100 * 2 / 8)
    assert groups["hum"]["answered"] == 0 and groups["hum"]["wer"] is None
    assert groups["intent"]["from_true_end"]["first_audio"]["p50"] == 780.0
    paused = truth.paused_report(results)
    assert paused == {
        "items": 1, "cut": 1, "cut_items": [{"item": "c", "first_part_heard": "what time"}],
        "false_starts": 0, "false_start_items": [],
    }  # fmt: skip
    results[2].cut, results[2].false_start = False, True  # continued, after its audio had begun
    paused = truth.paused_report(results)
    assert (paused["cut"], paused["false_starts"]) == (0, 1)
    assert paused["false_start_items"] == [{"item": "c", "first_part_heard": "what time"}]


def test_stats_are_percentiles_of_the_values() -> None:
    assert truth.stats([]) == {"n": 0}
    got = truth.stats([float(v) for v in range(101)])
    assert got == {"n": 101, "p5": 5.0, "p50": 50.0, "p95": 95.0, "max": 100.0}


def test_turns_started_by_noise_are_counted_per_noise() -> None:
    early = _record(1, {"speech_start": 6000.0, "speech_end": 9080.0})  # began 1.6 s before the speech
    on_time = _record(2, {"speech_start": 7300.0, "speech_end": 9080.0})  # within the VAD's preroll
    in_gap = _record(3, {"speech_start": 5200.0, "speech_end": 5900.0})  # ended before any speech
    in_pause = _record(4, {"speech_start": 310.0, "speech_end": 1290.0, "endpoint": 1590.0})  # a cut: speech
    got = truth.noise_turns([early, on_time, in_gap, in_pause], [PAUSED, PLAIN], ["clean", "babble"])
    assert got == {"turns": 2, "by_noise": {"babble": 1, "gap": 1}}
