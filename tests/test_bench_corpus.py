"""The bench corpus: its design, its noises, its pauses, the stream's noise beds, and a tiny
corpus through the real pipeline."""

from __future__ import annotations

import gc
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from assistant.bench import noise as noises
from assistant.bench.corpus import (
    CorpusItem,
    add_noise,
    bench_corpus,
    longest_pause,
    make_item,
    make_stream,
    rms,
)
from assistant.bench.design import (
    BENCH_VOICES,
    CONDITIONS,
    PAUSES_MS,
    RATES,
    UTTERANCES,
    Condition,
    Utterance,
    Voice,
    assign,
)
from assistant.bench.runner import format_table, run_bench, with_devices
from assistant.bench.stream import BED_FADE_MS, in_stretches
from assistant.config import load_config
from assistant.errors import AudioError
from assistant.intents.matcher import HANDLED, Matcher
from assistant.messages import SAMPLE_RATE, AudioIn
from assistant.messages import Utterance as Heard
from assistant.stages.vad import VadStage
from assistant.turn.reports import ReportLog


def _tone(ms: float, freq: float = 220.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(ms * SAMPLE_RATE / 1000)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _floats(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def _spread(counts: Counter[object]) -> int:
    return max(counts.values()) - min(counts.values())


# ---------------------------------------------------------------- the design


def test_the_corpus_is_wide_enough() -> None:
    texts = [u.text for u in UTTERANCES]
    assert len(UTTERANCES) >= 60 and len(set(texts)) == len(texts)
    assert sum(u.command for u in UTTERANCES) >= 15 and sum(not u.command for u in UTTERANCES) >= 30
    assert sum(u.paused for u in UTTERANCES) >= 8
    assert len({v.name for v in BENCH_VOICES}) >= 10 and any(v.engine == "piper" for v in BENCH_VOICES)
    assert len(RATES) == 2
    assert {c.noise for c in CONDITIONS} == {"clean", *noises.NOISE_KINDS}
    assert len({c.snr_db for c in CONDITIONS if c.snr_db is not None}) == 2


@pytest.mark.parametrize("variants", [1, 3])
def test_the_design_covers_every_voice_rate_noise_and_snr_evenly(variants: int) -> None:
    plan = assign(UTTERANCES, [v.name for v in BENCH_VOICES], list(RATES), CONDITIONS, variants)
    assert len(plan) == variants * len(UTTERANCES)
    assert plan == assign(UTTERANCES, [v.name for v in BENCH_VOICES], list(RATES), CONDITIONS, variants)
    for variant in range(variants):
        takes = [a for a in plan if a.variant == variant]
        assert [a.utterance for a in takes] == list(range(len(UTTERANCES)))
        voices = Counter(a.voice for a in takes)
        rates = Counter(a.rate for a in takes)
        kinds = Counter(a.condition.noise for a in takes)
        snrs = Counter(a.condition.snr_db for a in takes if a.condition.snr_db is not None)
        assert set(voices) == {v.name for v in BENCH_VOICES} and _spread(voices) <= 1
        assert set(rates) == set(RATES) and _spread(rates) <= 1
        assert set(kinds) == {"clean", *noises.NOISE_KINDS} and _spread(kinds) <= 1
        assert set(snrs) == {10.0, 20.0} and _spread(snrs) <= 1
        # every voice is heard in every kind of noise; the paused ones in every kind too
        assert len({(a.voice, a.condition.noise) for a in takes}) == len(BENCH_VOICES) * 4
        assert {a.condition.noise for a in takes if a.pause_ms} == set(kinds)
        assert Counter(a.rate for a in takes if a.pause_ms).keys() == set(RATES)
    # pauses: only the paused utterances have one, every length in turn
    assert all((a.pause_ms is not None) == UTTERANCES[a.utterance].paused for a in plan)
    assert set(a.pause_ms for a in plan if a.pause_ms) == set(PAUSES_MS)
    # the variants of one utterance differ in voice and in condition
    for index in range(len(UTTERANCES)):
        mine = [a for a in plan if a.utterance == index]
        assert len({a.voice for a in mine}) == len({a.condition for a in mine}) == variants


def test_the_commands_match_a_handled_intent_and_the_questions_none() -> None:
    matcher = Matcher.from_config(with_devices(load_config("default")))
    for utterance in UTTERANCES:
        found = matcher.match(utterance.text)
        if utterance.command:
            assert found is not None and found.intent in HANDLED, utterance.text
        else:
            assert found is None, (utterance.text, found)


# ---------------------------------------------------------------- the noises


def test_babble_is_a_deterministic_steady_mix_of_the_sources_at_unit_rms() -> None:
    sources = [_tone(700, f) for f in (150, 230, 310, 390, 470, 550, 630)]
    n = SAMPLE_RATE * 3
    mix = noises.babble(sources, n, seed=4, talkers=5)
    assert mix.dtype == np.float32 and mix.size == n
    assert rms(mix) == pytest.approx(1.0, rel=1e-3)
    assert np.array_equal(mix, noises.babble(sources, n, seed=4, talkers=5))
    assert not np.array_equal(mix, noises.babble(sources, n, seed=5, talkers=5))
    spectrum = np.abs(np.fft.rfft(mix))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    peaks = {round(f) for f in freqs[np.argsort(spectrum)[-5:]]}
    assert len(peaks & {150, 230, 310, 390, 470, 550, 630}) == 5  # five talkers of the seven
    blocks = [rms(mix[i : i + SAMPLE_RATE // 2]) for i in range(0, n, SAMPLE_RATE // 2)]
    assert max(blocks) < 1.5 * min(blocks)  # looped sources: no gaps, no bursts
    with pytest.raises(AudioError):
        noises.babble([np.zeros(100, np.float32)], n, seed=1)


def test_hum_is_mains_harmonics_over_a_low_fan_at_unit_rms() -> None:
    n = SAMPLE_RATE * 2
    for mains in (50.0, 60.0):
        hum = noises.hum(n, seed=2, mains_hz=mains)
        assert rms(hum) == pytest.approx(1.0, rel=1e-3)
        power = np.abs(np.fft.rfft(hum)) ** 2
        freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        assert freqs[np.argmax(power)] == pytest.approx(mains, abs=1)
        floor = np.median(power[(freqs > 2000) & (freqs < 3000)])
        assert power[np.abs(freqs - 2 * mains) < 1].max() > 50 * floor
        assert power[freqs < 1000].sum() > 0.95 * power.sum()
    assert np.array_equal(noises.hum(n, seed=2), noises.hum(n, seed=2))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    mains_by_seed = {round(freqs[np.argmax(np.abs(np.fft.rfft(noises.hum(n, s))))]) for s in range(8)}
    assert mains_by_seed == {50, 60}
    with pytest.raises(AudioError, match="unknown noise kind"):
        noises.noise("traffic", n, seed=1)


@pytest.mark.parametrize("kind", noises.NOISE_KINDS)
def test_every_kind_of_noise_is_mixed_at_the_snr_asked(kind: str) -> None:
    clean = np.concatenate([np.zeros(4000, np.float32), _tone(1000), np.zeros(4000, np.float32)])
    sources = [_tone(500, 300), _tone(800, 410)]
    noisy = add_noise(clean, (4000, 20000), snr_db=10.0, seed=3, kind=kind, sources=sources)
    snr = 20 * np.log10(rms(clean[4000:20000]) / rms((noisy - clean)[4000:20000]))
    assert snr == pytest.approx(10.0, abs=0.3)


def test_fade_rises_and_falls_smoothly() -> None:
    env = noises.fade(1000, 400, 200)
    assert env[0] < 0.001 and env[-1] < 0.001 and np.all(env[400:800] == 1.0)
    assert np.all(np.diff(env[:400]) > 0) and np.all(np.diff(env[800:]) < 0)
    assert np.max(np.abs(np.diff(env))) < 2 * np.pi / 400  # no step: a raised cosine
    assert np.array_equal(noises.fade(10, 50), noises.fade(10, 10))  # a fade longer than the envelope


# ---------------------------------------------------------------- pauses


def test_longest_pause_finds_the_longest_quiet_run_inside_the_speech() -> None:
    x = np.zeros(3000, np.float32)
    x[[100, 200, 1500, 1600, 2000]] = 0.5
    assert longest_pause(x) == (201, 1500)
    assert longest_pause(np.zeros(10, np.float32)) == (0, 0)


def test_a_paused_item_records_where_its_pause_truly_lies() -> None:
    take = np.concatenate([_tone(500, amplitude=0.8), np.zeros(9600, np.float32), _tone(400, amplitude=0.8)])
    item = make_item(7, "set a timer for ten minutes", "tone", take, lead_ms=300, trail_ms=300, snr_db=15.0,
                     noise_kind="hum", pause_ms=600.0)  # fmt: skip
    assert item.pause_start_ms is not None and item.pause_end_ms is not None
    assert item.pause_start_ms == pytest.approx(300 + 500, abs=1)
    assert item.pause_end_ms == pytest.approx(300 + 1100, abs=1)
    assert item.condition == "paused" and item.noise == "hum" and item.id == "07-tone-hum15"
    # the pause is silent in the clean take, so the bounds are the clean signal's, not the noise's
    assert item.speech_end_ms == pytest.approx(300 + 1500, abs=1)
    plain = make_item(7, "x", "tone", _tone(500), lead_ms=300, trail_ms=300, snr_db=None)
    assert plain.pause_start_ms is None and plain.condition == "clean"
    short = np.concatenate([_tone(500, amplitude=0.8), np.zeros(800, np.float32), _tone(400, amplitude=0.8)])
    with pytest.raises(AudioError, match="did not pause"):
        make_item(7, "x", "tone", short, lead_ms=300, trail_ms=300, snr_db=None, pause_ms=600.0)


# ---------------------------------------------------------------- the noise bed


def test_the_stream_fades_a_noisy_items_bed_in_under_the_gap_and_keeps_its_samples() -> None:
    a = make_item(0, "a", "tone", _tone(600), lead_ms=300, trail_ms=300, snr_db=None)
    b = make_item(1, "b", "tone", _tone(800), lead_ms=300, trail_ms=300, snr_db=10.0, noise_kind="hum",
                  bed_ms=(1000.0, 500.0))  # fmt: skip
    c = make_item(2, "c", "tone", _tone(500), lead_ms=300, trail_ms=300, snr_db=None)
    assert len(b.bed_before) == 2 * 16000 and len(b.bed_after) == 2 * 8000 and a.bed_before == b""
    stream, positions = make_stream([a, b, c], gap_ms=2000.0, fade_ms=400.0)
    x = _floats(stream)
    at_b, at_c = round(positions[1].start_ms * 16), round(positions[2].start_ms * 16)
    end_a, end_b = round(positions[0].end_ms * 16), round(positions[1].end_ms * 16)
    # the items' samples are untouched, so the true bounds of speech hold in the stream
    assert np.array_equal(x[at_b:end_b], _floats(b.pcm)) and np.array_equal(x[:end_a], _floats(a.pcm))
    assert positions[1].speech_end_ms == pytest.approx(positions[1].start_ms + b.speech_end_ms)
    # before b: silence, then b's bed faded in over 400 ms, then full, running into b's own noise
    bed = _floats(b.bed_before)
    assert np.all(x[end_a : at_b - bed.size] == 0)
    expected = bed * noises.fade(bed.size, 400 * 16)
    assert np.max(np.abs(x[at_b - bed.size : at_b] - expected)) < 2 / 32768
    level = rms(_floats(b.pcm)[: 250 * 16])  # b's lead: its noise alone
    assert rms(x[at_b - 250 * 16 : at_b]) == pytest.approx(level, rel=0.2)
    # one noise, continuous across the seam: no step bigger than the noise's own
    steps = np.abs(np.diff(x[at_b - 4000 : at_b + 4000]))
    assert steps[3999] <= np.percentile(steps, 99.5)
    assert rms(x[at_b - bed.size : at_b - bed.size + 30 * 16]) < 0.05 * level  # no sudden start
    # after b: its bed faded out, then silence before c
    after = x[end_b : end_b + 8000]
    assert rms(after[:480]) == pytest.approx(level, rel=0.35) and rms(after[-480:]) < 0.1 * level
    assert np.all(x[end_b + 8000 : at_c] == 0)


def test_between_two_noisy_items_one_noise_cross_fades_into_the_other() -> None:
    a = make_item(0, "a", "tone", _tone(600), lead_ms=300, trail_ms=300, snr_db=10.0, noise_kind="pink",
                  bed_ms=(1000.0, 1500.0))  # fmt: skip
    b = make_item(1, "b", "tone", _tone(800), lead_ms=300, trail_ms=300, snr_db=10.0, noise_kind="hum",
                  bed_ms=(1500.0, 0.0))  # fmt: skip
    stream, positions = make_stream([a, b], gap_ms=2000.0)
    x = _floats(stream)
    lead = len(a.bed_before) // 2  # a noisy first item: its bed before it at full level, no rise
    assert positions[0].start_ms == pytest.approx(1000.0)
    assert np.max(np.abs(x[:lead] - _floats(a.bed_before))) < 2 / 32768
    end_a, at_b = round(positions[0].end_ms * 16), round(positions[1].start_ms * 16)
    gap = x[end_a:at_b]
    after, before = _floats(a.bed_after), _floats(b.bed_before)
    overlap = 1000 * 16  # 1.5 s + 1.5 s of beds in a 2 s gap
    ramp = (np.arange(overlap) + 0.5) / overlap * (np.pi / 2)
    expected = np.zeros(gap.size, np.float32)
    expected[: after.size] += after * np.concatenate([np.ones(after.size - overlap), np.cos(ramp)])
    expected[gap.size - before.size :] += before * np.concatenate(
        [np.sin(ramp), np.ones(before.size - overlap)]
    )
    assert np.max(np.abs(gap - expected)) < 2 / 32768
    # never silent, no seam: each bed runs on from (or into) its item's own noise
    assert min(rms(gap[i : i + 480]) for i in range(0, gap.size - 480, 480)) > 0.3 * rms(after)
    for seam in (end_a, at_b):
        steps = np.abs(np.diff(x[seam - 4000 : seam + 4000]))
        assert steps[3999] <= np.percentile(steps, 99.5)


def test_a_gap_shorter_than_the_bed_takes_the_beds_end() -> None:
    b = make_item(1, "b", "tone", _tone(800), lead_ms=300, trail_ms=300, snr_db=10.0, noise_kind="hum",
                  bed_ms=(1000.0, 0.0))  # fmt: skip
    a = make_item(0, "a", "tone", _tone(600), lead_ms=300, trail_ms=300, snr_db=None)
    stream, positions = make_stream([a, b], gap_ms=500.0, fade_ms=1000.0)
    x = _floats(stream)
    at_b = round(positions[1].start_ms * 16)
    tail = _floats(b.bed_before)[-8000:]
    assert np.max(np.abs(x[at_b - 8000 : at_b] - tail * noises.fade(8000, 8000))) < 2 / 32768


# ---------------------------------------------------------------- a tiny real corpus

TINY = (
    Utterance(("What is the capital of France?",)),
    Utterance(("What time is it?",), command=True),
    Utterance(("Set a timer for", "five minutes."), command=True),
)
TINY_VOICES = (
    Voice("espeak-en-us", "espeak", "en-us", 160, 50),
    Voice("espeak-en-gb", "espeak", "en-gb", 150, 50),
)
TINY_CONDITIONS = (Condition("clean"), Condition("babble", 10.0), Condition("hum", 20.0))


@pytest.fixture(scope="module")
def tiny(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[CorpusItem]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return bench_corpus(
        model_dir, utterances=TINY, voices=TINY_VOICES, rates={"normal": 1.0}, conditions=TINY_CONDITIONS,
        variants=2, cache_dir=tmp_path_factory.mktemp("corpus"),
    )  # fmt: skip


def test_a_tiny_designed_corpus_measures_speech_pauses_and_noise(tiny: list[CorpusItem]) -> None:
    assert len(tiny) == 6 and len({i.id for i in tiny}) == 6
    assert [i.variant for i in tiny] == [0, 0, 0, 1, 1, 1]
    assert {i.noise for i in tiny} == {"clean", "babble", "hum"}
    for item in tiny:
        x = _floats(item.pcm)
        assert item.lead_ms == pytest.approx(300, abs=1) and item.trail_ms == pytest.approx(300, abs=1)
        if item.text.startswith("Set a timer"):
            assert item.pause_start_ms is not None and item.pause_end_ms is not None
            assert item.speech_start_ms < item.pause_start_ms < item.pause_end_ms < item.speech_end_ms
            assert item.pause_end_ms - item.pause_start_ms >= 0.5 * PAUSES_MS[0]
        else:
            assert item.pause_start_ms is None
        if item.snr_db is not None:
            assert len(item.bed_before) > 0 and len(item.bed_after) > 0
            start, end = round(item.speech_start_ms * 16), round(item.speech_end_ms * 16)
            assert rms(x[:start]) > 0.001  # noise in the lead too, as in a room
            assert 20 * np.log10(rms(x[start:end]) / rms(x[:start])) > item.snr_db - 3


def _turns(stream: bytes) -> list[tuple[float, float]]:
    """(speech start, speech end) of each turn the VAD (as the pipeline configures it, without
    speculation) finds in ``stream``, ms."""
    vad = VadStage(replace(load_config("default").vad, speculate_after_ms=0), ReportLog())
    found = vad.feed(AudioIn(stream + bytes(32000), 0.0)) + vad.finish()
    return [(m.speech_start_ms, m.speech_end_ms) for m in found if isinstance(m, Heard)]


def _noise_turns(
    items: list[CorpusItem], fade_ms: float = BED_FADE_MS
) -> tuple[list[tuple[float, float]], int]:
    """The turns that noise began (before an item's speech and its 300 ms preroll) or that end in
    no item's speech, and how many turns are the items' own."""
    stream, positions = make_stream(items, gap_ms=4000.0, fade_ms=fade_ms)
    turns = _turns(stream)
    owned = {
        turn
        for turn in turns
        for p in positions
        if p.speech_start_ms - 400 <= turn[0] and p.speech_start_ms <= turn[1] <= p.speech_end_ms + 2000
    }
    return [turn for turn in turns if turn not in owned], len(owned)


def test_in_stretches_noise_never_rises_so_it_starts_no_turn(tiny: list[CorpusItem]) -> None:
    # babble is speech, and the VAD may take it for speech however it comes: not this test's business
    steady = [item for item in tiny if item.noise != "babble"]
    assert {item.noise for item in steady} == {"clean", "hum"} and steady[0].noise == "clean"
    ordered = in_stretches(steady)
    assert [item.noise for item in ordered] == ["hum", "hum", "clean", "clean"]
    assert _noise_turns(ordered) == ([], len(ordered))
    # a noisy item after a clean one, its noise starting at full level in the gap: a turn of noise
    assert _noise_turns(steady, fade_ms=0.0)[0]


def test_stretches_go_from_the_lowest_snr_to_clean_kind_by_kind() -> None:
    def item(noise: str, snr: float | None, n: int) -> CorpusItem:
        return make_item(n, "x", "tone", _tone(300), lead_ms=10, trail_ms=10, snr_db=snr, noise_kind=noise,
                         sources=[_tone(300, 500)], bed_ms=(10.0, 10.0))  # fmt: skip

    items = [item("clean", None, 0), item("babble", 20.0, 1), item("pink", 10.0, 2), item("hum", 20.0, 3),
             item("babble", 10.0, 4), item("pink", 20.0, 5), item("pink", 10.0, 6)]  # fmt: skip
    got = [(i.noise, i.snr_db, i.id[:2]) for i in in_stretches(items)]
    assert got == [("pink", 10.0, "02"), ("pink", 10.0, "06"), ("babble", 10.0, "04"), ("pink", 20.0, "05"),
                   ("hum", 20.0, "03"), ("babble", 20.0, "01"), ("clean", None, "00")]  # fmt: skip


def test_the_bench_reports_spans_from_both_ends_on_real_models(
    tiny: list[CorpusItem], model_dir: Path
) -> None:
    config = load_config("default")
    result = run_bench(config, model_dir, corpus=tiny, limit=3, gap_ms=4500)
    assert result["items"] == 3
    answered = [r for r in result["per_item"] if r["spans"]]
    assert len(answered) >= 2
    for item in answered:
        spans, true, baseline = item["spans"], item["spans_true"], item["baseline"]
        assert spans["first_audio"] <= spans["e2e"]
        assert ("ack_played" in item["actions"]) == (spans["first_audio"] < spans["e2e"])
        # from the true end = from speech_end plus the lag, span by span
        for span in ("e2e", "first_audio", "endpointing", "transcript"):
            assert true[span] == pytest.approx(spans[span] + true["lag"], abs=0.2)
        assert true["asr"] == spans["asr"]
        assert -100 < true["lag"] < 400  # the VAD's end lies near the true end
        assert baseline["e2e"] == pytest.approx(
            sum(baseline[k] for k in ("endpointing", "asr", "llm_reply", "tts_reply"))
        )
    assert result["lag"]["n"] == len(answered)
    assert result["paused"]["items"] == 1 and result["paused"]["cut"] in (0, 1)
    assert set(result["by_condition"]) >= {"clean", "paused"}
    handlers = result["by_handler"]
    assert handlers["intent"]["answered"] + handlers["llm"]["answered"] == len(answered)
    assert handlers["llm"]["answered"] >= 1
    tps = result["llm_tokens_per_s"]
    assert tps["pipeline"] > 0 and tps["alone_before"] > 0 and tps["alone_after"] > 0
    gc.collect()  # the bench's engines, for the tests after this one that count the models alive
    table = format_table(result)
    assert "from the true end" in table and "lag of speech_end after the true end" in table
    assert "paused utterances cut in two:" in table and "questions (LLM)" in table
