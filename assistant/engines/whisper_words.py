"""Word times for faster-whisper's short window, and the previous-text prompt.

Whisper places words by the cross-attention of its alignment heads (CTranslate2's ``align``,
dynamic time warping over the encoder's 20 ms positions), as faster-whisper does for
``word_timestamps=True``: one decoder pass over the text, about 8 ms for tiny.en on a 2 s window
on two cores (the short window's whole transcription takes about 50 ms there).

The prefix: the decoder can be given the start of the transcript (the words of an utterance
already agreed on while it was spoken) and continues from there, so only the rest is decoded;
decoding, not encoding, is most of the short window's time (about 4 ms a token against 13 ms for
a 2 s window's encoding, tiny.en on two cores).
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np

from assistant.contracts import TimedWord

POSITION_MS = 20.0
"""One encoder position (two mel frames), in ms."""
MAX_PREFIX_TOKENS = 223
"""At most half of Whisper's 448 decoder positions go to a forced prefix (as in faster-whisper)."""


def prefix_prompt(tokenizer: Any, sot_sequence: list[int], prefix: str) -> list[int]:
    """The decoder's prompt for a transcript known to begin with ``prefix``: ``sot_sequence``,
    the first timestamp and ``prefix``'s tokens (its last ``MAX_PREFIX_TOKENS``), which the decoder
    then continues; ``sot_sequence`` alone when ``prefix`` is empty. Its result begins with them."""
    prefix = prefix.strip()
    if not prefix:
        return list(sot_sequence)
    forced = list(tokenizer.encode(" " + prefix))[-MAX_PREFIX_TOKENS:]
    return [*sot_sequence, tokenizer.timestamp_begin, *forced]


def merge_punctuation(words: list[tuple[str, float, float]]) -> list[TimedWord]:
    """Whisper's words (text with its leading space, start and end in ms) as ``TimedWord``s, a
    word of punctuation only joined to the word before it (a leading one to the word after)."""
    merged: list[TimedWord] = []
    leading = ""
    for text, start, end in words:
        bare = text.strip()
        if not bare:
            continue
        if all(ch in string.punctuation for ch in bare):
            if merged:
                last = merged[-1]
                merged[-1] = TimedWord(last.text + bare, last.start_ms, max(last.end_ms, end))
            else:
                leading += bare
            continue
        merged.append(TimedWord(leading + bare, start, end))
        leading = ""
    return merged


def align_words(model: Any, tokenizer: Any, encoded: Any, tokens: list[int], frames: int) -> list[TimedWord]:
    """Where each word of ``tokens`` (text tokens, no timestamps) lies in the encoded window,
    whose first ``frames`` mel frames are audio; ms from the window's start."""
    if not tokens:
        return []
    result = model.align(encoded, tokenizer.sot_sequence, [tokens], frames)[0]
    words, word_tokens = tokenizer.split_to_word_tokens([*tokens, tokenizer.eot])
    if len(word_tokens) <= 1 or not result.alignments:
        return []
    text_indices = np.array([pair[0] for pair in result.alignments])
    time_indices = np.array([pair[1] for pair in result.alignments])
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_ms = time_indices[jumps] * POSITION_MS
    if len(jump_ms) <= int(boundaries[-1]):  # an alignment that does not cover every token
        return []
    starts, ends = jump_ms[boundaries[:-1]], jump_ms[boundaries[1:]]
    return merge_punctuation(
        [(w, float(a), float(b)) for w, a, b in zip(words[:-1], starts, ends, strict=False)]
    )
