"""Short-window Whisper: pure rules (bounds, loops, fallback), WER, and behaviour on the real model."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from assistant.bench.corpus import QUESTIONS, VOICES, CorpusItem, build_corpus, pink_noise
from assistant.bench.wer import edit_distance, normalize, wer, wer_counts
from assistant.config import AsrConfig
from assistant.engines.whisper import FULL_WINDOW_MS, Decoded, WhisperEngine
from assistant.engines.whisper_rules import (
    fallback_reason,
    find_repetition,
    inside_segments,
    max_new_tokens,
    trim_loop,
    window_frames,
)
from assistant.errors import ConfigError

# --- WER -------------------------------------------------------------------------------------------


def test_normalize_lowercases_strips_punctuation_and_unifies_numbers() -> None:
    assert (
        normalize("What is 2 plus 3?")
        == normalize("what is two plus three")
        == ["what", "is", "2", "plus", "3"]
    )
    assert normalize("Twenty-one, one hundred and five!") == ["21", "105"]
    assert normalize("What's the time?") == ["whats", "the", "time"]
    assert normalize("Set it to 1,000.") == normalize("set it to one thousand") == ["set", "it", "to", "1000"]
    assert normalize("rock and roll") == ["rock", "and", "roll"]


def test_edit_distance_and_wer() -> None:
    assert edit_distance(["a", "b", "c"], ["a", "x", "c", "d"]) == 2
    assert edit_distance([], ["a"]) == 1
    assert wer("What is the capital of France?", "what is the capital of france") == 0.0
    assert wer("turn on the lights", "turn off the light") == pytest.approx(0.5)
    assert wer("one two", "one two three four") == pytest.approx(1.0)
    assert wer("", "") == 0.0 and wer("", "hello") == 1.0
    counts = wer_counts([("a b c d", "a b c d"), ("e f", "e")])
    assert (counts.errors, counts.ref_words) == (1, 6) and counts.wer == pytest.approx(1 / 6)


# --- pure rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "What is 2 plus 3? What is 2 plus 3? What is 2 plus 3?",
        "What time is it? what time is it",
        "the the the the",
        "go home go home go home",
        "I want to go to the shop and then I want to go to the shop",
    ],
)
def test_find_repetition_flags_loops(text: str) -> None:
    assert find_repetition(text)


@pytest.mark.parametrize(
    "text",
    [
        "What is the capital of France?",
        "Turn on the kitchen light and turn on the fan.",
        "Very very good.",
        "Set a timer for ten minutes. Then remind me to call.",
        "",
    ],
)
def test_find_repetition_passes_ordinary_text(text: str) -> None:
    assert find_repetition(text) == ""


def test_trim_loop_cuts_where_the_transcript_starts_over() -> None:
    assert trim_loop("What time is it? What time is it? What time") == "What time is it?"
    assert trim_loop("What is the capital of France? What is") == "What is the capital of France?"
    assert trim_loop("Turn on the light. Turn on the fan.") == "Turn on the light. Turn on the fan."
    assert trim_loop("define the word gravity, define the word gravity") == "define the word gravity"
    # a one-word repeat is cut only at the decode bound, where loops end
    assert trim_loop("who wrote Romeo and Juliet, who", at_bound=True) == "who wrote Romeo and Juliet"
    assert trim_loop("who wrote Romeo and Juliet, who") == "who wrote Romeo and Juliet, who"
    assert trim_loop("Lock the front door.", at_bound=True) == "Lock the front door."


def test_inside_segments_drops_segments_that_start_after_the_audio() -> None:
    ts = 1000  # first timestamp id; 1000 + k means k * 20 ms
    tokens = [ts + 0, 1, 2, ts + 50, ts + 50, 3, ts + 90, ts + 100, 4, 5]  # 0-1 s, 1-1.8 s, 2 s-...
    assert inside_segments(tokens, ts, audio_ms=1500) == [1, 2, 3]
    assert inside_segments(tokens, ts, audio_ms=2500) == [1, 2, 3, 4, 5]
    assert inside_segments([7, 8], ts, audio_ms=500) == [7, 8]


def test_decode_and_window_bounds_follow_the_duration() -> None:
    config = AsrConfig()
    assert max_new_tokens(1000, config) == 15  # 5 tokens/s + 10
    assert max_new_tokens(3000, config) == 25
    assert max_new_tokens(600_000, config) == 440  # never past Whisper's 448 positions
    assert window_frames(2000, 500) == 250
    assert window_frames(2005, 500) % 2 == 0
    assert window_frames(100, 0) == 100  # never below 1 s
    assert window_frames(40_000, 500) == 3000


def test_fallback_reason_rules() -> None:
    config = AsrConfig()

    def reason(text: str, logprob: float = -0.2, ms: float = 2000, bound: bool = False, rms: float = 0.1,
               looped: bool = False) -> str:  # fmt: skip
        return fallback_reason(text, logprob, ms, bound, rms, config, looped)

    assert reason("What is the capital of France?") == ""
    assert reason("What is 2 plus 3? What is 2 plus 3?") == "repetition"
    assert reason("What is the capital of", bound=True) == "bound"
    assert reason("What is the capital of France?", bound=True, looped=True) == ""
    assert reason(" ".join(["word"] * 3 + ["other", "words", "here", "and", "more", "of", "them", "too"]) * 2,
                  ms=1000) != ""  # fmt: skip
    assert reason("a b c d e f g h i j k l m n o p", ms=1000) == "too_long"
    assert reason("What is the capital of France?", logprob=-1.5) == "logprob"
    assert reason("", rms=0.1) == "empty"
    assert reason("", rms=0.0) == ""  # silence: empty is right


def test_config_checks_the_new_keys() -> None:
    with pytest.raises(ConfigError, match=r"asr\.window = 'medium'.*\['short', 'full'\]"):
        AsrConfig(window="medium")
    with pytest.raises(ConfigError, match=r"asr\.window_margin_ms"):
        AsrConfig(window_margin_ms=-1)
    with pytest.raises(ConfigError, match=r"asr\.max_tokens_per_s"):
        AsrConfig(max_tokens_per_s=0.5)
    with pytest.raises(ConfigError, match=r"asr\.fallback_logprob"):
        AsrConfig(fallback_logprob=0.5)
    with pytest.raises(ConfigError, match=r"asr\.short_no_speech_gate"):
        AsrConfig(short_no_speech_gate=1.5)


# --- the real model ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def asr_path(model_dir: Path) -> Path:
    from assistant import models

    return models.resolve("whisper-tiny.en", "asr", model_dir)


@pytest.fixture(scope="module")
def short_engine(asr_path: Path) -> WhisperEngine:
    return WhisperEngine(asr_path, AsrConfig(window="short"))


@pytest.fixture(scope="module")
def full_engine(asr_path: Path) -> WhisperEngine:
    return WhisperEngine(asr_path, AsrConfig(window="full"))


@pytest.fixture(scope="module")
def items(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[CorpusItem]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    questions = (QUESTIONS[0], QUESTIONS[4], QUESTIONS[6])
    cache = tmp_path_factory.mktemp("corpus")
    return build_corpus(model_dir, questions=questions, voices=VOICES[:2], snr_db=None, cache_dir=cache)


def _pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def test_short_window_transcribes_spoken_questions_as_well_as_the_full_window(
    items: list[CorpusItem], short_engine: WhisperEngine, full_engine: WhisperEngine
) -> None:
    assert len(items) == 6
    short = [short_engine.transcribe(item.pcm) for item in items]
    full = [full_engine.transcribe(item.pcm) for item in items]
    short_wer = wer_counts((item.text, r.text) for item, r in zip(items, short, strict=True)).wer
    full_wer = wer_counts((item.text, r.text) for item, r in zip(items, full, strict=True)).wer
    assert short_wer <= full_wer + 0.05, [r.text for r in short]
    assert short_wer <= 0.25
    # the short window really was used (not a fallback each time), and is much shorter than 30 s
    used = [r for r in short if not r.fallback]
    assert len(used) >= 4
    assert all(r.window_ms <= r.audio_ms + 500 + 20 for r in used)
    assert all(r.window_ms == FULL_WINDOW_MS and not r.fallback for r in full)


def test_a_repetition_loop_falls_back_to_the_full_window(
    items: list[CorpusItem], short_engine: WhisperEngine, full_engine: WhisperEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    item = next(i for i in items if i.text == "What is two plus three?")
    seen: list[int] = []

    def looping_decode(window: np.ndarray, max_new: int, audio_ms: float) -> Decoded:
        seen.append(window.shape[1])
        return Decoded("What is 2 plus 3? What is 2 plus 3?", -0.1, 0.01, hit_bound=True)

    monkeypatch.setattr(short_engine, "_decode_window", looping_decode)
    before = short_engine.fallbacks
    result = short_engine.transcribe(item.pcm)
    assert seen and seen[0] < 3000  # the short window was tried first
    assert seen[1:] == [600]  # then a 6 s window, rejected too: off the live path, the full window
    assert result.fallback and result.fallback_reason == "repetition"
    assert short_engine.fallbacks == before + 1
    assert result.window_ms == FULL_WINDOW_MS
    assert result.text == full_engine.transcribe(item.pcm).text  # the real full window ran
    assert wer(item.text, result.text) <= 0.2


@pytest.mark.parametrize("window", ["short", "full"])
def test_silence_and_noise_give_empty_text(
    window: str, short_engine: WhisperEngine, full_engine: WhisperEngine
) -> None:
    engine = short_engine if window == "short" else full_engine
    rng = np.random.default_rng(0)
    inputs = {
        "silence": np.zeros(32_000, np.float32),
        "pink": pink_noise(32_000, seed=5) * 0.05,
        "white": rng.standard_normal(24_000).astype(np.float32) * 0.02,
        "hum": (0.1 * np.sin(2 * np.pi * 50 * np.arange(32_000) / 16_000)).astype(np.float32),
    }
    for name, samples in inputs.items():
        result = engine.transcribe(_pcm(samples))
        assert result.text == "", (name, result)


def test_decode_length_is_bounded_by_the_duration(
    items: list[CorpusItem], short_engine: WhisperEngine, full_engine: WhisperEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    item = items[0]
    one_second = item.pcm[: int(item.speech_start_ms * 32) + 32_000]
    for engine in (short_engine, full_engine):
        result = engine.transcribe(one_second)
        assert len(result.text.split()) <= max_new_tokens(result.audio_ms, engine.config), result
    bounds: list[int] = []
    real = short_engine._decode_window

    def spy(window: np.ndarray, max_new: int, audio_ms: float) -> Decoded:
        bounds.append(max_new)
        return real(window, max_new, audio_ms)

    monkeypatch.setattr(short_engine, "_decode_window", spy)
    short_engine.transcribe(one_second)
    assert bounds == [max_new_tokens(len(one_second) / 32, short_engine.config)] and bounds[0] < 20


@pytest.mark.parametrize("live", [True, False])
def test_the_full_window_never_retries_at_higher_temperatures_on_the_live_path(
    full_engine: WhisperEngine, monkeypatch: pytest.MonkeyPatch, live: bool
) -> None:
    """faster-whisper's temperature fallback decodes again at 0.2, 0.4... when a result looks
    poor: seconds on the live path (a deadline given), where the engine asks for one decode at
    temperature 0. Elsewhere (a file, a Wyoming client) the fallback stays."""
    seen: dict[str, object] = {}
    real = full_engine._model.transcribe

    def spy(audio: np.ndarray, **options: object) -> object:
        seen.update(options)
        return real(audio, **options)

    monkeypatch.setattr(full_engine._model, "transcribe", spy)
    deadline = time.monotonic() + 60 if live else None
    full_engine.transcribe(_pcm(np.zeros(16000, dtype=np.float32)), deadline)
    assert seen["temperature"] == (0.0 if live else (0.0, 0.2, 0.4, 0.6, 0.8, 1.0))


@pytest.mark.parametrize(
    ("deadline_s", "passes"),
    [(None, ["wide", "full"]), (10.0, ["wide"]), (0.0, [])],
    ids=["file", "live", "late"],
)
def test_the_second_pass_is_a_wider_window_and_runs_only_if_it_can_end_by_the_deadline(
    short_engine: WhisperEngine, monkeypatch: pytest.MonkeyPatch, deadline_s: float | None, passes: list[str]
) -> None:
    """A rejected short result is redone on a 6 s window; off the live path (no deadline) a result
    still rejected goes on to the full window; live, the wide window's words are used; with no
    time for a second pass, the short window's words, marked ``hurried``."""
    import time

    from assistant.contracts import AsrResult

    rejected = AsrResult("thank you thank you", (), 1000.0, 1000.0, False, "repetition")
    ran: list[str] = []

    def short(audio: np.ndarray, ms: float, min_ms: float = 0.0) -> AsrResult:
        if min_ms:
            ran.append("wide")
            return AsrResult("Thank you, wide.", (), ms, min_ms, False, "logprob")
        return rejected

    monkeypatch.setattr(short_engine, "_transcribe_short", short)
    monkeypatch.setattr(
        short_engine,
        "_transcribe_full",
        lambda audio, ms, live: ran.append("full") or AsrResult("Thank you."),
    )
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    result = short_engine.transcribe(_pcm(np.zeros(16000, dtype=np.float32)), deadline)
    assert ran == passes
    if passes:
        expected = "Thank you." if "full" in passes else "Thank you, wide."
        assert result.text == expected and result.fallback and not result.hurried
        assert result.fallback_reason == "repetition"  # why the short window's words were not used
    else:  # the short window's words, marked as such: the stage decides what to do with them
        assert result.text == rejected.text and result.hurried and result.fallback_reason == "repetition"
