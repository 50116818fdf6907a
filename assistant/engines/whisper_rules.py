"""The short window's pure rules: its size, its decode bound, the no-speech gate, the segments
inside the audio, loops, and when a result is redone on the full window (``engines/whisper.py``).

Numbers in, numbers or text out; no clock, no model, so tests drive them directly.
"""

from __future__ import annotations

import math
import re

from assistant.config import AsrConfig
from assistant.contracts import FULL_WINDOW_MS

FRAME_MS = 10.0
"""One mel frame (hop of 160 samples at 16 kHz), in ms."""
MIN_WINDOW_MS = 1000.0
"""The short window is never shorter than this, in ms."""
MAX_DECODE_TOKENS = 440
"""Whisper's decoder holds 448 positions; the prompt takes a few."""
MAX_WORDS_PER_S = 6.0
"""A short-window transcript with more words per second of audio than this (plus 3) is suspect."""
SPEECH_RMS = 0.003
"""Audio RMS (fraction of full scale, about -50 dBFS) above which an empty short result is suspect."""


def gate_segment(no_speech_prob: float, avg_logprob: float, text: str, config: AsrConfig) -> bool:
    """True if a segment should be kept (Whisper's own no-speech rule, plus: it must have words)."""
    if not any(ch.isalnum() for ch in text):
        return False
    return not (no_speech_prob > config.no_speech_threshold and avg_logprob < config.min_avg_logprob)


def max_new_tokens(audio_ms: float, config: AsrConfig) -> int:
    """Decode bound for ``audio_ms`` of audio: ``max_tokens_per_s`` per second plus ``max_tokens_extra``."""
    bound = math.ceil(audio_ms / 1000.0 * config.max_tokens_per_s) + config.max_tokens_extra
    return max(1, min(bound, MAX_DECODE_TOKENS))


def window_frames(audio_ms: float, margin_ms: float) -> int:
    """Mel frames of the short window for ``audio_ms`` of audio plus ``margin_ms``: even, at most 3,000."""
    ms = max(audio_ms + margin_ms, MIN_WINDOW_MS)
    frames = math.ceil(ms / FRAME_MS)
    frames += frames % 2  # the encoder's strided convolution halves the frames
    return min(frames, round(FULL_WINDOW_MS / FRAME_MS))


_SENTENCE = re.compile(r"[^.!?]+[.!?]*")
_WORD = re.compile(r"[\w']+")


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def find_repetition(text: str) -> str:
    """The repeated part if ``text`` loops, else ``""``.

    A loop is: the same sentence (two words or more) twice; a run of 2 to 8 words repeated three
    times back to back; one word four times back to back; or any run of 5+ words found twice.
    Ordinary questions ("turn on the light and turn on the fan") pass.
    """
    sentences = [" ".join(_words(s)) for s in _SENTENCE.findall(text)]
    seen: set[str] = set()
    for sentence in sentences:
        if len(sentence.split()) >= 2 and sentence in seen:
            return sentence
        seen.add(sentence)
    words = _words(text)
    for n in range(1, 9):
        times = 4 if n == 1 else 3
        for i in range(len(words) - n * times + 1):
            gram = words[i : i + n]
            if all(words[i + k * n : i + (k + 1) * n] == gram for k in range(1, times)):
                return " ".join(gram)
    grams: set[tuple[str, ...]] = set()
    for i in range(len(words) - 4):
        five = tuple(words[i : i + 5])
        if five in grams:
            return " ".join(five)
        grams.add(five)
    return ""


TIMESTAMP_MS = 20.0
"""One Whisper timestamp step, in ms."""


def inside_segments(
    tokens: list[int], timestamp_begin: int, audio_ms: float, slack_ms: float = 100.0
) -> list[int]:
    """Text tokens of the timestamped segments that start before ``audio_ms - slack_ms``.

    ``tokens`` is a decode with timestamps (ids at or above ``timestamp_begin`` are times, in 20 ms
    steps); text before any timestamp counts as starting at 0. A segment the decoder places after
    the audio has ended describes the window's padding, not speech.
    """
    kept: list[int] = []
    current: list[int] = []
    start_ms: float | None = None
    for token in tokens:
        if token < timestamp_begin:
            current.append(token)
            continue
        time_ms = (token - timestamp_begin) * TIMESTAMP_MS
        if start_ms is None:
            start_ms = time_ms
            if current:  # text with no opening timestamp
                kept.extend(current)
                current = []
        else:
            if start_ms < audio_ms - slack_ms:
                kept.extend(current)
            current = []
            start_ms = None
    if current and (start_ms is None or start_ms < audio_ms - slack_ms):
        kept.extend(current)
    return kept


def trim_loop(text: str, at_bound: bool = False) -> str:
    """``text`` cut where it starts over: at the first sentence that repeats an earlier one, or that
    (unfinished, at the end) is the beginning of an earlier one.

    A decoder stuck in a loop restarts its transcript ("What time is it? What time is it? What
    time"); a short window makes this common. The first copy is kept. Text that never starts over
    comes back unchanged (stripped).

    Also cut, punctuation or not: a tail of two words or more that repeats the text's beginning
    ("define the word gravity, define the word gravity"); and with ``at_bound`` (the decode ran to
    its token bound, as a loop does) any tail that repeats words found earlier ("... Juliet, who").
    """
    spans = [m.span() for m in _WORD.finditer(text)]
    words = [text[a:b].lower() for a, b in spans]
    for i in range(1, len(words)):
        tail = words[i:]
        restarts = len(tail) >= 2 and words[: len(tail)] == tail
        if restarts or (at_bound and any(words[j : j + len(tail)] == tail for j in range(i))):
            return text[: spans[i][0]].rstrip(" ,;:-")
    sentences = [s.strip() for s in _SENTENCE.findall(text) if s.strip()]
    seen: list[str] = []
    for i, sentence in enumerate(sentences):
        key = " ".join(_words(sentence))
        if not key:
            continue
        finished = sentence[-1] in ".!?"
        last = i == len(sentences) - 1
        if key in seen or (last and not finished and any(s.startswith(key + " ") for s in seen)):
            return " ".join(sentences[:i])
        seen.append(key)
    return " ".join(sentences)


def collapse_repetition(text: str) -> str:
    """``text`` with repeated sentences dropped (the first kept), when it loops; otherwise unchanged."""
    if not find_repetition(text):
        return text
    kept: list[str] = []
    seen: set[str] = set()
    for sentence in _SENTENCE.findall(text):
        key = " ".join(_words(sentence))
        if key and key not in seen:
            seen.add(key)
            kept.append(sentence.strip())
    return " ".join(kept)


def fallback_reason(
    text: str,
    avg_logprob: float,
    audio_ms: float,
    hit_bound: bool,
    audio_rms: float,
    config: AsrConfig,
    looped: bool = False,
) -> str:
    """Why a short-window result should be redone on the full window, or ``""`` if it looks right.

    ``text`` is the kept text (empty if gated out), ``avg_logprob`` the decode's mean log-probability
    per token, ``hit_bound`` whether the decode stopped at ``max_new_tokens`` (expected when
    ``looped``: a loop that was cut runs to the bound), ``audio_rms`` the audio's RMS as a fraction
    of full scale.
    """
    if not text:
        return "empty" if audio_rms > SPEECH_RMS else ""
    if find_repetition(text):
        return "repetition"
    if hit_bound and not looped:
        return "bound"
    if len(_words(text)) > audio_ms / 1000.0 * MAX_WORDS_PER_S + 3:
        return "too_long"
    if avg_logprob < config.fallback_logprob:
        return "logprob"
    return ""
