"""The spoken benchmark corpus: pure helpers on synthetic signals, then a small real corpus."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from assistant.bench import corpus
from assistant.bench.corpus import (
    PEAK,
    QUESTIONS,
    SPEECH_THRESHOLD,
    VOICES,
    CorpusItem,
    add_noise,
    build_corpus,
    make_item,
    make_stream,
    pink_noise,
    rms,
    speech_bounds,
)
from assistant.messages import SAMPLE_RATE


def _tone(ms: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(ms * SAMPLE_RATE / 1000)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _samples(item: CorpusItem) -> np.ndarray:
    return np.frombuffer(item.pcm, dtype="<i2").astype(np.float32) / 32768.0


def test_speech_bounds_finds_first_and_last_loud_sample() -> None:
    x = np.zeros(1000, np.float32)
    x[100] = 0.5
    x[700] = -0.2
    assert speech_bounds(x) == (100, 701)
    assert speech_bounds(np.zeros(10, np.float32)) == (0, 0)


def test_pink_noise_has_unit_rms_more_low_than_high_power_and_is_deterministic() -> None:
    noise = pink_noise(SAMPLE_RATE * 2, seed=1)
    assert rms(noise) == pytest.approx(1.0, rel=1e-3)
    power = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(noise.size, 1 / SAMPLE_RATE)
    low = power[(freqs > 100) & (freqs < 200)].mean()
    high = power[(freqs > 4000) & (freqs < 8000)].mean()
    assert low > 10 * high  # 1/f: ~30x between these bands; white noise would be ~1x
    assert np.array_equal(noise, pink_noise(SAMPLE_RATE * 2, seed=1))


def test_add_noise_hits_the_snr_over_the_speech_region() -> None:
    clean = np.concatenate([np.zeros(4000, np.float32), _tone(1000), np.zeros(4000, np.float32)])
    noisy = add_noise(clean, (4000, 20000), snr_db=15.0, seed=3)
    snr = 20 * np.log10(rms(clean[4000:20000]) / rms((noisy - clean)[4000:20000]))
    assert snr == pytest.approx(15.0, abs=0.3)


def test_make_item_pads_exact_silence_and_measures_the_speech() -> None:
    take = np.concatenate([np.zeros(800, np.float32), _tone(500, 0.8), np.zeros(1600, np.float32)])
    item = make_item(3, "hello", "tone", take, lead_ms=250, trail_ms=400, snr_db=None)
    x = _samples(item)
    assert item.id == "03-tone-clean" and item.snr_db is None
    assert item.speech_start_ms == pytest.approx(250, abs=0.1)
    assert item.lead_ms == item.speech_start_ms
    assert item.duration_ms - item.speech_end_ms == pytest.approx(400, abs=0.1)
    assert np.max(np.abs(x)) == pytest.approx(PEAK, abs=1e-3)
    assert item.speech_end_ms - item.speech_start_ms == pytest.approx(500, abs=2)


def test_make_stream_places_items_with_gaps() -> None:
    a = make_item(0, "a", "tone", _tone(300), lead_ms=100, trail_ms=100, snr_db=None)
    b = make_item(1, "b", "tone", _tone(600), lead_ms=200, trail_ms=50, snr_db=None)
    stream, positions = make_stream([a, b], gap_ms=1000)
    assert len(stream) == len(a.pcm) + len(b.pcm) + 2 * SAMPLE_RATE
    assert [p.item_id for p in positions] == [a.id, b.id]
    assert positions[0].start_ms == 0 and positions[0].end_ms == pytest.approx(a.duration_ms)
    assert positions[1].start_ms == pytest.approx(a.duration_ms + 1000)
    assert positions[1].speech_start_ms == pytest.approx(positions[1].start_ms + b.speech_start_ms)
    x = np.frombuffer(stream, dtype="<i2").astype(np.float32) / 32768.0
    first, last = speech_bounds(x[round(positions[1].start_ms * 16) :])
    assert first / 16 + positions[1].start_ms == pytest.approx(positions[1].speech_start_ms, abs=0.1)
    assert last / 16 + positions[1].start_ms == pytest.approx(positions[1].speech_end_ms, abs=0.1)


def test_the_corpus_covers_enough_questions_and_voices() -> None:
    assert len(QUESTIONS) >= 20 and len(set(QUESTIONS)) == len(QUESTIONS)
    assert sum(v.engine == "espeak" for v in VOICES) >= 3
    assert any(v.engine == "piper" for v in VOICES)


@pytest.fixture(scope="module")
def corpus_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus")


@pytest.fixture(scope="module")
def small_corpus(model_dir: Path, corpus_cache: Path) -> list[CorpusItem]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return build_corpus(
        model_dir, questions=QUESTIONS[:2], voices=VOICES, snr_db=15.0, cache_dir=corpus_cache
    )


def test_real_items_are_16k_int16_and_speech_lies_where_the_audio_is_loud(
    small_corpus: list[CorpusItem],
) -> None:
    assert len(small_corpus) == 2 * len(VOICES) * 2
    assert len({item.id for item in small_corpus}) == len(small_corpus)
    for item in small_corpus:
        x = _samples(item)
        assert len(item.pcm) % 2 == 0 and item.duration_ms == pytest.approx(x.size / 16)
        assert 500 < item.speech_end_ms - item.speech_start_ms < 5000, item.id  # a question, at 16 kHz
        # the bounds are the stored samples': 16-bit truncation can take a sound just over the
        # threshold under it (a slow tail: 301.75 ms once), never one under it over
        assert 299 <= item.lead_ms <= 310 and 299 <= item.trail_ms <= 310, item.id
        if item.snr_db is None:
            start, end = round(item.speech_start_ms * 16), round(item.speech_end_ms * 16)
            assert np.all(np.abs(x[:start]) <= SPEECH_THRESHOLD) and abs(x[start]) > SPEECH_THRESHOLD
            assert np.all(np.abs(x[end:]) <= SPEECH_THRESHOLD) and abs(x[end - 1]) > SPEECH_THRESHOLD
            assert rms(x[start:end]) > 0.03, item.id


def test_noisy_items_have_the_intended_snr(small_corpus: list[CorpusItem]) -> None:
    clean = {(i.text, i.voice): i for i in small_corpus if i.snr_db is None}
    noisy = [i for i in small_corpus if i.snr_db is not None]
    assert noisy
    for item in noisy:
        ref = clean[(item.text, item.voice)]
        assert (item.speech_start_ms, item.speech_end_ms) == (ref.speech_start_ms, ref.speech_end_ms)
        start, end = round(item.speech_start_ms * 16), round(item.speech_end_ms * 16)
        speech, noise = _samples(ref), _samples(item) - _samples(ref)
        assert rms(noise[:start]) > 0.001  # noise in the lead silence too, as in a real room
        snr = 20 * np.log10(rms(speech[start:end]) / rms(noise[start:end]))
        assert snr == pytest.approx(item.snr_db, abs=0.5), item.id


def test_corpus_is_cached_on_disk(
    small_corpus: list[CorpusItem], model_dir: Path, corpus_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = corpus_cache

    def no_synthesis(*args: object) -> None:
        raise AssertionError("the cached corpus was synthesized again")

    monkeypatch.setattr(corpus, "_synthesize", no_synthesis)
    again = build_corpus(model_dir, questions=QUESTIONS[:2], voices=VOICES, snr_db=15.0, cache_dir=cache)
    assert again == small_corpus
    with pytest.raises(AssertionError, match="synthesized again"):
        build_corpus(model_dir, questions=QUESTIONS[:3], voices=VOICES, snr_db=15.0, cache_dir=cache)
