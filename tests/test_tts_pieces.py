"""The voice speaks long text in pieces: cut where a reader would pause, memory bounded."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from assistant import models
from assistant.config import ConfigError, TtsConfig
from assistant.engines.piper import PiperEngine, pieces, spoken_length

LONG = (
    "Romeo and Juliet is a tragedy written by William Shakespeare early in his career, about two "
    "young lovers whose deaths ultimately reconcile their feuding families. It was among his most "
    "popular plays."
)


def test_short_text_is_one_piece() -> None:
    assert pieces("The capital of France is Paris.", 90) == ["The capital of France is Paris."]
    assert pieces("  ", 90) == []
    assert pieces(LONG, 0) == [LONG]


def test_long_text_is_cut_at_sentence_ends_then_clause_breaks_then_spaces() -> None:
    parts = pieces(LONG, 90)
    assert " ".join(parts) == LONG
    assert all(len(p) <= 90 for p in parts), parts
    assert parts[0].endswith("career,")  # the comma, not the last space before 90
    assert parts[-1] == "It was among his most popular plays."  # a sentence stays whole where it fits
    no_breaks = "word " * 40
    assert all(len(p) <= 60 for p in pieces(no_breaks, 60))
    assert pieces("1,000,000 people live in a city the size of " + "x" * 100, 40)[0].startswith("1,000,000")


def test_numbers_count_as_read_out() -> None:
    # "July 20, 1969" is read as "July twentieth, nineteen sixty-nine": the voice's memory follows
    # the audio, so a piece with digits holds fewer characters
    text = (
        "The first person to walk on the Moon was Neil Armstrong, who on July 20, 1969, "
        "stepped out of the lunar module Eagle."
    )
    assert len(text) <= 120 < spoken_length(text)
    parts = pieces(text, 90)
    assert " ".join(parts) == text and len(parts) == 2
    assert all(spoken_length(p) <= 90 for p in parts), parts
    assert parts[0].endswith(",")  # at a clause break, as without digits
    assert pieces("No digits here at all, just words.", 40) == ["No digits here at all, just words."]


def test_a_word_longer_than_the_limit_stays_whole() -> None:
    word = "x" * 120
    assert pieces(f"{word} and more", 50) == [word, "and more"]


def test_piece_chars_is_checked() -> None:
    with pytest.raises(ConfigError, match="tts.piece_chars"):
        TtsConfig(piece_chars=5)
    assert TtsConfig(piece_chars=0).piece_chars == 0


@pytest.fixture(scope="module")
def voice_path(model_dir: Path) -> Path:
    return models.resolve(TtsConfig().voice, "tts", model_dir)


def test_the_voice_speaks_every_piece_and_calls_after_once(voice_path: Path) -> None:
    calls: list[int] = []
    whole = PiperEngine(voice_path, replace(TtsConfig(), piece_chars=0))
    cut = PiperEngine(voice_path, TtsConfig(), after=lambda: calls.append(1))
    pcm_whole, pcm_cut = whole.synthesize_all(LONG), cut.synthesize_all(LONG)
    assert calls == [1]
    seconds = [len(p) / 2 / cut.sample_rate for p in (pcm_whole, pcm_cut)]
    # the same words: about as long (piper pauses a little where a piece ends)
    assert abs(seconds[0] - seconds[1]) < 0.25 * seconds[0], seconds


def test_after_runs_when_synthesis_fails(voice_path: Path, monkeypatch: Any) -> None:
    calls: list[int] = []
    engine = PiperEngine(voice_path, TtsConfig(), after=lambda: calls.append(1))

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("onnx failed")

    monkeypatch.setattr(engine._voice, "synthesize", broken)
    with pytest.raises(Exception, match="synthesis failed"):
        engine.synthesize_all("Hello there.")
    assert calls == [1]
