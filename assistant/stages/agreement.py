"""The words of an utterance that are settled while it is still being spoken (pure; no clock).

The ASR stage transcribes the growing utterance during speech (``stages/asr.py``). Whisper's
last words on audio cut mid-speech are guesses ("What is to play?" for "What is two plus..."),
so a word is *committed* only when two consecutive passes agree on it, and on every word before
it, and it ends at least ``holdback_ms`` before the end of the audio the later pass heard: the
LocalAgreement-2 policy of whisper_streaming (Macháček et al., 2023), with a holdback for the
word being spoken. And neither pass may end on it: on the bench corpus two early passes both
ended on "Rem" (for "Remind"), and the transcript became "Rem I need to call...". Committed
words are kept for good: each later pass is given them as its decoder's prefix and decodes only
what follows, and so is the transcription at the pause.

Words are compared lowercased, without punctuation ("capital." and "capital" agree); the
committed text uses the later pass's spelling.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from assistant.contracts import TimedWord

HOLDBACK_MS = 300.0
"""A word is committed only if it ends at least this long before the audio heard, in ms."""

_NOT_WORD = re.compile(r"[^\w']+")


def word_key(text: str) -> str:
    """``text`` as words are compared: lowercase, punctuation dropped."""
    return _NOT_WORD.sub("", text.lower())


def agreed(previous: Sequence[TimedWord], current: Sequence[TimedWord], until_ms: float) -> list[TimedWord]:
    """The longest run of ``current``'s words, from its first, that ``previous`` has in the same
    places, that end by ``until_ms``, and that both passes heard a word after (a pass's last word
    may be one cut short: two passes that both end on "Rem" have not heard "Remind")."""
    run: list[TimedWord] = []
    last = min(len(previous), len(current)) - 1
    for index, (old, new) in enumerate(zip(previous, current, strict=False)):
        key = word_key(new.text)
        if index >= last or not key or word_key(old.text) != key or new.end_ms > until_ms:
            break
        run.append(new)
    return run


@dataclass
class Agreement:
    """One utterance's passes during speech, and the words they settled."""

    holdback_ms: float = HOLDBACK_MS
    committed: list[TimedWord] = field(default_factory=list)
    """The settled words, in order; times in ms from the start of the utterance's audio."""
    passes: int = 0
    """Passes taken in (``update``)."""
    _last: list[TimedWord] = field(default_factory=list)

    def update(self, words: Sequence[TimedWord], audio_ms: float) -> list[TimedWord]:
        """Take in a pass over the utterance's first ``audio_ms``: its words, which begin with
        the committed ones (their prefix) unless the pass went wrong. Returns the words newly
        committed. A pass that does not begin with the committed words settles nothing, and the
        next pass is compared with it."""
        self.passes += 1
        done = len(self.committed)
        keys = [word_key(w.text) for w in self.committed]
        if [word_key(w.text) for w in words[:done]] != keys:
            self._last = []
            return []
        fresh = agreed(self._last[done:], words[done:], audio_ms - self.holdback_ms)
        self.committed += fresh
        self._last = list(words)
        return fresh

    def distrust(self) -> None:
        """The last pass's result was not to be trusted: the next one is compared with nothing."""
        self.passes += 1
        self._last = []

    @property
    def prefix(self) -> str:
        """The committed words as the transcript's beginning (no sentence end after the last:
        the utterance goes on), or ``""``."""
        text = " ".join(w.text for w in self.committed)
        return text.rstrip(".?!")

    @property
    def end_ms(self) -> float:
        """Where the last committed word ends (ms from the start of the audio); 0 with none."""
        return self.committed[-1].end_ms if self.committed else 0.0
