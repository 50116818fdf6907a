"""Turn LLM output into plain text that a TTS engine (piper) can read aloud.

``clean_for_speech`` removes markdown markup (keeping the words), emoji and pictographs, control
and format characters, and piper's ``[[ phoneme ]]`` brackets; it never raises on any ``str``.
Line ends become sentence ends: a line with no final punctuation gets a period, so list items
and headings are spoken with a pause between them.
"""

from __future__ import annotations

import re
import unicodedata

_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")

_PICTOGRAPHS = re.compile(
    "[\u2300-\u23ff"  # misc technical: watches, hourglasses
    "\u25a0-\u27bf"  # geometric shapes, misc symbols, dingbats
    "\u2b00-\u2bff"  # stars, arrows used as emoji
    "\u3030\u303d\u3297\u3299"
    "\u20e3\ufe00-\ufe0f"  # keycap, variation selectors
    "\U0001f000-\U0001faff"  # emoji blocks, incl. flags and skin tones
    "\U000e0000-\U000e007f]"  # tag characters (subdivision flags)
)

_FENCE = re.compile(r"^\s*(?:```|~~~)")
_RULE = re.compile(r"^\s*([-*_])(?:\s*\1){2,}\s*$")
_LINE_PREFIX = re.compile(r"^\s*(?:>\s*)*(?:#{1,6}\s+|[-*+\u2022]\s+|\d{1,3}[.)]\s+)?")
_HEADING_TAIL = re.compile(r"\s+#+\s*$")
_LINK = re.compile(r"!?\[([^\]\n]*)\]\([^)\n]*\)")
_PHONEMES = re.compile(r"\[{2,}|\]{2,}")
_STARS = re.compile(r"(?<![\d\s])\*+|\*+(?![\d\s])")  # markup, but keeps "2 * 3" and "2*3"
_UNDERSCORES = re.compile(r"(?<!\w)_+|_+(?!\w)")  # markup, but keeps snake_case
_MARKS = re.compile(r"`+|~~")
_DASH = re.compile(r"\s+[-\u2013]+(?=\s|$)|\s*\u2014\s*")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+(?=[,!?;:\u2026]|\.(?!\d))")
_REPEATED_COMMA = re.compile(r",(?:\s*,)+")
_LEADING_PUNCT = re.compile(r"^[\s,;:]+")
_TERMINAL = re.compile(r"[.!?\u2026;:,][\"'\u201d\u2019\u00bb)\]]*$")
_SPACES = re.compile(r"\s+")


def _filter_chars(text: str) -> str:
    """Line breaks to ``\\n``, tabs to spaces; drop control/format/surrogate chars and emoji."""
    kept: list[str] = []
    for ch in text.replace("\r\n", "\n"):
        if ch in _LINE_BREAKS:
            kept.append("\n")
        elif ch == "\t":
            kept.append(" ")
        elif unicodedata.category(ch)[0] != "C":  # Cc, Cf (ZWJ, bidi), Cs, Co, Cn
            kept.append(ch)
    return _PICTOGRAPHS.sub(" ", "".join(kept))


def _clean_line(line: str) -> str:
    line = _LINE_PREFIX.sub("", line, count=1)
    line = _HEADING_TAIL.sub("", line)
    line = _LINK.sub(r"\1", line)
    line = _PHONEMES.sub(" ", line)
    line = _STARS.sub("", line)
    line = _UNDERSCORES.sub("", line)
    line = _MARKS.sub("", line)
    line = _DASH.sub(", ", line)
    line = _SPACE_BEFORE_PUNCT.sub("", line)
    line = _REPEATED_COMMA.sub(",", line)
    line = _LEADING_PUNCT.sub("", line)
    return _SPACES.sub(" ", line).strip()


def clean_for_speech(text: str) -> str:
    """Return ``text`` as plain, single-line prose for TTS. Never raises; may return ``""``."""
    lines: list[str] = []
    for raw in _filter_chars(text).split("\n"):
        if _FENCE.match(raw) or _RULE.match(raw):
            continue
        line = _clean_line(raw)
        if not line:
            continue
        if lines and not _TERMINAL.search(lines[-1]):
            lines[-1] += "."
        lines.append(line)
    return " ".join(lines)


def is_speakable(text: str) -> bool:
    """True if ``text`` still has a letter or digit once cleaned for speech."""
    return any(ch.isalnum() for ch in clean_for_speech(text))


_TRAILING_OPEN = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "so",
        "because",
        "if",
        "of",
        "to",
        "for",
        "with",
        "in",
        "on",
        "at",
        "by",
        "from",
        "about",
        "than",
        "then",
        "um",
        "uh",
        "er",
        "like",
        "is",
        "are",
        "was",
        "were",
        "my",
        "your",
        "his",
        "her",
        "their",
        "our",
        "its",
        "this",
        "that",
        "these",
        "those",
        "what",
        "which",
        "who",
    ]
)


def looks_complete(transcript: str) -> bool:
    """True if a transcript reads as a finished sentence or question (adaptive endpointing).

    It must end in ``.``, ``?`` or ``!``, have at least two words, and not end on a word that
    leaves the sentence open ("the", "and", "um"...). Whisper punctuates partial speech too, so
    this is a heuristic: a wrong "yes" only means the turn ends after the short silence.
    """
    text = transcript.strip()
    if not text or text[-1] not in ".?!" or text.endswith("..."):
        return False
    words = re.findall(r"[\w']+", text.lower())
    return len(words) >= 2 and words[-1] not in _TRAILING_OPEN


_SURELY_OPEN = frozenset(
    ["a", "an", "the", "and", "or", "but", "because", "if", "of", "to", "for", "in", "than", "from"]
    + ["my", "your", "his", "their", "our", "um", "uh", "er"]
)
"""Words a spoken request almost never ends on ("Set a timer for", "What is the capital of")."""


def looks_open(transcript: str) -> bool:
    """True if a transcript stops where a sentence cannot end: on an article, a conjunction or a
    preposition that needs what follows ("Set a timer for", "What is the capital of?" as Whisper
    may punctuate it), or on an ellipsis. A stricter list than ``looks_complete``'s: words like
    "on", "in" or "is" end real requests ("Turn the lights on", "What's going on?")."""
    text = transcript.strip()
    words = re.findall(r"[\w']+", text.lower())
    if not words:
        return False
    return text.endswith(("...", "…")) or words[-1] in _SURELY_OPEN


def transcript_kind(text: str) -> str:
    """What a speculative transcript says of its turn: ``question``, ``finished``, ``open`` or
    ``unsure`` (``endpointing.segmenter.TRANSCRIPT_KINDS``)."""
    if looks_complete(text):
        return "question" if text.rstrip().endswith("?") else "finished"
    return "open" if looks_open(text) else "unsure"
