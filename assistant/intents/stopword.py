"""The stop word: is a short transcript "stop", said over a reply or an alarm?

No microWakeWord ``stop`` model is carried by a package on the index (Home Assistant's Voice PE
downloads its own), so the stop word is recognised from the transcript of a short utterance
heard while the speaker plays (``stages/asr.py``): Whisper on just that clip, then this check,
which is a set lookup. The phrases are the matcher's own for ``HassNevermind`` ("stop [it|that|
talking]", "cancel", "be quiet", "enough", "never mind"...: ``matcher.EXTRA_SENTENCES`` and Home
Assistant's sentences), expanded once per language, so "stop" means the same with or without
the speaker playing. A transcript is the stop word when each of its sentences is one of them
("Stop. Stop!", "Stop, stop."), "please" or "okay" around it allowed.

Pure apart from the lazy expansion (hassil, the intents package); thread-safe once built.
"""

from __future__ import annotations

import functools
import logging
import re

_LOGGER = logging.getLogger(__name__)

MAX_STOP_MS = 1500
"""Speech longer than this (ms) is a question, not the stop word: it is never checked."""
POLITE = frozenset({"please", "okay", "ok", "oh", "hey", "now"})
"""Words allowed before or after the phrase ("okay stop", "stop it please")."""

_SENTENCES = re.compile(r"[.!?;,]+")
_WORD = re.compile(r"[\w']+")


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.lower().replace("’", "'") for w in _WORD.findall(text))


@functools.lru_cache(maxsize=4)
def stop_phrases(language: str = "en") -> frozenset[tuple[str, ...]]:
    """Every wording of ``HassNevermind`` in ``language``, as tuples of lower-case words."""
    from hassil.parse_expression import parse_sentence
    from hassil.sample import sample_expression
    from home_assistant_intents import get_intents

    from assistant.intents.matcher import EXTRA_SENTENCES

    templates = list(EXTRA_SENTENCES.get(language, {}).get("HassNevermind", []))
    data = get_intents(language) or {}
    for group in data.get("intents", {}).get("HassNevermind", {}).get("data", []):
        templates += [t for t in group.get("sentences", []) if "{" not in t and "<" not in t]
    phrases: set[tuple[str, ...]] = set()
    for template in templates:
        try:
            phrases |= {_words(text) for text in sample_expression(parse_sentence(template).expression)}
        except Exception as err:  # a template this expansion cannot take is only skipped
            _LOGGER.debug("stop word: %r not expanded: %r", template, err)
    phrases.discard(())
    if not phrases:
        _LOGGER.warning("stop word: no HassNevermind sentences for %r; 'stop' only", language)
        phrases.add(("stop",))
    return frozenset(phrases)


def is_stop(text: str, language: str = "en") -> bool:
    """``text`` (a transcript) says the stop word and nothing else."""
    phrases = stop_phrases(language)
    said = [_words(part) for part in _SENTENCES.split(text)]
    heard = False
    for words in said:
        start, end = 0, len(words)
        while start < end and words[start] in POLITE:
            start += 1
        while end > start and words[end - 1] in POLITE:
            end -= 1
        if start == end:  # nothing, or "okay," alone
            continue
        if words[start:end] not in phrases:
            return False
        heard = True
    return heard
