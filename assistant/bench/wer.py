"""Word error rate with light text normalisation, in pure Python (no clock, no I/O).

Normalisation: lowercase, apostrophes dropped (``what's`` -> ``whats``), other punctuation turned
into spaces, and numbers written as digits: number words up to the thousands (``twenty one``,
``two hundred and five``) become digits, so ``2`` and ``two`` count as the same word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_UNITS = {
    "zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
    "ninety": 90,
}  # fmt: skip
_SCALES = {"hundred": 100, "thousand": 1000}
_NUMBER_WORDS = set(_UNITS) - {"oh"} | set(_TENS) | set(_SCALES)


def _words_to_numbers(words: Sequence[str]) -> list[str]:
    """Runs of number words -> one digit string each (``twenty one`` -> ``21``); other words kept."""
    out: list[str] = []
    total = current = 0
    in_number = False
    for i, word in enumerate(words):
        joins = word == "and" and in_number and i + 1 < len(words) and words[i + 1] in _NUMBER_WORDS
        if word not in _NUMBER_WORDS and not joins:
            if in_number:
                out.append(str(total + current))
                total = current = 0
                in_number = False
            out.append(word)
            continue
        if joins:
            continue
        low = current % 100
        fits = low == 0 if word in _TENS else (low == 0 or (low >= 20 and low % 10 == 0))
        if in_number and word not in _SCALES and not fits:  # "one two", "twenty one one": a new number
            out.append(str(total + current))
            total = current = 0
        in_number = True
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        else:
            total += max(current, 1) * _SCALES[word]
            current = 0
    if in_number:
        out.append(str(total + current))
    return out


def normalize(text: str) -> list[str]:
    """Text -> comparable words (see the module docstring)."""
    text = text.lower().replace("'", "").replace("\u2019", "")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 -> 1000
    text = re.sub(r"(?<=\d)\.(?=\d)", " point ", text)
    text = re.sub(r"[^\w\s]", " ", text)
    return _words_to_numbers(text.split())


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences (substitutions, insertions, deletions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


@dataclass(frozen=True)
class WerCounts:
    """Word errors summed over a set of utterances."""

    errors: int
    """Substitutions + insertions + deletions."""
    ref_words: int
    """Words in the normalised references."""

    @property
    def wer(self) -> float:
        """Errors per reference word, as a fraction (0.05 = 5 %); 0 when there are no reference words."""
        return self.errors / self.ref_words if self.ref_words else 0.0


def wer_counts(pairs: Iterable[tuple[str, str]]) -> WerCounts:
    """Corpus-level counts over ``(reference, hypothesis)`` pairs (errors and words summed, not averaged)."""
    errors = words = 0
    for ref, hyp in pairs:
        ref_words = normalize(ref)
        errors += edit_distance(ref_words, normalize(hyp))
        words += len(ref_words)
    return WerCounts(errors, words)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of one hypothesis, as a fraction (may exceed 1 with many insertions).

    An empty reference gives 0.0 for an empty hypothesis and 1.0 otherwise.
    """
    counts = wer_counts([(reference, hypothesis)])
    if counts.ref_words == 0:
        return 0.0 if not normalize(hypothesis) else 1.0
    return counts.wer
