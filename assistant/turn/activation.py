"""Which utterances become turns: always, after a wake phrase, or push-to-talk.

With a wake word model (``listen.wake_engine = "micro"``) the wake stage (``stages.wake``) lets
only what follows the wake word reach ASR, so every transcript is admitted; a wake word the ASR
heard all the same (the user said it again, within a follow-up) is removed from its start.

Pure: the caller passes the time (seconds, any monotonic origin) in.
"""

from __future__ import annotations

import re

from assistant.config import ListenConfig
from assistant.wake import wake_words

_WORD = re.compile(r"[\w']+")


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


class Activation:
    """Admits or refuses transcripts according to ``listen.mode``."""

    def __init__(self, config: ListenConfig) -> None:
        self.config = config
        self._micro = config.mode == "wake" and config.wake_engine == "micro"
        self._phrases = [_words(p) for p in wake_words(config) if _words(p)]
        self._awake_until = float("-inf")
        self.refused = 0
        """Transcripts heard without the wake phrase (wake mode), and so ignored."""

    def admit(self, text: str, now_s: float) -> str | None:
        """The question to answer (wake phrase removed), or None when it is not for us."""
        if self._micro:
            return self._without_wake_word(text)
        if self.config.mode != "wake" or now_s < self._awake_until:
            return text
        matches = list(_WORD.finditer(text))
        spoken = [m.group().lower() for m in matches]
        for phrase in self._phrases:
            if spoken[: len(phrase)] == phrase:
                rest = text[matches[len(phrase) - 1].end() :].lstrip(" ,.!?;:-")
                if not _words(rest):  # just the wake phrase: the question comes next
                    self._awake_until = now_s + self.config.follow_up_s
                    return None
                return rest
        self.refused += 1
        return None

    def _without_wake_word(self, text: str) -> str | None:
        """``text`` less a wake word at its start (whole, or its last word: "Nabu, what..."); None
        when nothing else is left."""
        matches = list(_WORD.finditer(text))
        spoken = [m.group().lower() for m in matches]
        for phrase in self._phrases:
            for heard in (phrase, phrase[-1:]):
                if spoken[: len(heard)] == heard:
                    text = text[matches[len(heard) - 1].end() :].lstrip(" ,.!?;:-")
                    return text if _words(text) else None
        return text if _words(text) else None

    def adopt(self, previous: Activation) -> None:
        """Carry the follow-up window over from the instance this one replaces (a reload)."""
        self._awake_until = previous._awake_until

    def replied(self, now_s: float) -> None:
        """A reply has finished: follow-up questions need no wake phrase for a while."""
        if self.config.mode == "wake":
            self._awake_until = now_s + self.config.follow_up_s
