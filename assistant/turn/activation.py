"""Which utterances become turns: always, after a wake phrase, or push-to-talk.

Pure: the caller passes the time (seconds, any monotonic origin) in.
"""

from __future__ import annotations

import re

from assistant.config import ListenConfig

_WORD = re.compile(r"[\w']+")


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


class Activation:
    """Admits or refuses transcripts according to ``listen.mode``."""

    def __init__(self, config: ListenConfig) -> None:
        self.config = config
        self._phrases = [_words(p) for p in config.wake_phrases if _words(p)]
        self._awake_until = float("-inf")
        self.refused = 0
        """Transcripts heard without the wake phrase (wake mode), and so ignored."""

    def admit(self, text: str, now_s: float) -> str | None:
        """The question to answer (wake phrase removed), or None when it is not for us."""
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

    def adopt(self, previous: Activation) -> None:
        """Carry the follow-up window over from the instance this one replaces (a reload)."""
        self._awake_until = previous._awake_until

    def replied(self, now_s: float) -> None:
        """A reply has finished: follow-up questions need no wake phrase for a while."""
        if self.config.mode == "wake":
            self._awake_until = now_s + self.config.follow_up_s
