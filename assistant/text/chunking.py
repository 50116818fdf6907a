"""Cut streaming LLM text into speakable chunks for TTS, sentence by sentence.

Pure and synchronous: ``SpeechChunker.push`` takes text pieces of any size and returns the
chunks it can already finish; ``flush`` returns the rest at the end of a reply. The result does
not depend on how the text was split into pieces: a possible boundary is only decided once
enough of the following text has arrived (a period is a sentence end only when the next
non-space character is known, since it may belong to ``3.14``, ``Dr. Smith`` or ``e.g. this``).

Where a chunk ends:

- sentence ends ``. ! ? … ;`` (closing quotes and brackets stay with the sentence) and line breaks;
- clause breaks ``, : ) —`` and a spaced `` - ``, once the chunk is ``first_min_chars`` long
  (first chunk of a reply, so speech starts early) or ``min_chars`` long (later chunks);
- the first chunk only: before a word that opens a clause or a phrase (``that``, ``because``,
  ``in``, ``with``...) once the chunk has ``first_break_words`` words, so the first sentence of a
  reply is not synthesized whole before anything is heard ("The moon is about 384,000 km away |
  from Earth.");
- the last space before ``max_chars`` when there is no boundary at all.

Every chunk is passed through ``clean_for_speech``; chunks with nothing to say are dropped.
"""

from __future__ import annotations

import re

from assistant.config import ChunkerConfig
from assistant.text.speakable import clean_for_speech, is_speakable

_SENTENCE_RUN = ".!?\u2026"
_CLOSERS = "\"'\u201d\u2019\u00bb)]*_~`"
_WAIT = -1
"""Judgement of a possible boundary that needs more text."""

_ABBREVIATIONS = frozenset(
    {"dr", "mr", "mrs", "ms", "st", "mt", "prof", "sr", "vs", "fig", "cf", "e.g", "i.e", "approx"}
    | {"gen", "col", "lt", "sgt", "capt", "rev", "gov", "sen", "rep", "dept"}
)
"""Words whose period never ends a sentence (``etc``/``Inc`` do, unless a lowercase word follows)."""
_BREAK_WORDS = frozenset(
    {"that", "which", "who", "whose", "where", "when", "while", "because", "since", "although"}
    | {"though", "but", "so", "if", "unless", "until", "after", "before", "than", "by", "in", "on"}
    | {"at", "for", "with", "from", "to", "into", "about", "over", "under", "through", "during"}
    | {"without", "between", "across", "around", "like", "of", "and", "or", "is", "are", "was", "were"}
)
"""Words before which a first chunk may end: a clause or a phrase starts there, or the predicate
after the subject ("Twelve times four | is forty-eight.")."""
_INITIALS = re.compile(r"(?:[A-Z]\.)*[A-Z]")
_WORD_PREFIX = "\"'(\u201c\u2018[*_"


class SpeechChunker:
    """Streaming text in, speakable chunks out. One instance per reply; ``reset`` between replies."""

    def __init__(self, config: ChunkerConfig) -> None:
        self._config = config
        self._buf = ""
        self._pos = 0  # positions before this in ``_buf`` are judged "no boundary"
        self._line_start = True  # the current chunk starts at the beginning of a line
        self.chunk_count = 0
        """Chunks returned since the last reset; 0 means the next chunk is the reply's first."""

    def reset(self) -> None:
        """Forget buffered text and the chunk count (start of a new reply)."""
        self._buf = ""
        self._pos = 0
        self._line_start = True
        self.chunk_count = 0

    def push(self, piece: str) -> list[str]:
        """Add a piece of text; return the chunks it completes (often none)."""
        self._buf += piece
        out: list[str] = []
        while (end := self._find_cut()) is not None:
            self._emit(self._buf[:end], out)
            self._buf = self._buf[end:]
            self._pos = 0
            self._line_start = False
        return out

    def flush(self) -> list[str]:
        """End of reply: return what is left as chunks and empty the buffer."""
        out: list[str] = []
        self._emit(self._buf, out)
        self._buf = ""
        self._pos = 0
        self._line_start = True
        return out

    def _emit(self, raw: str, out: list[str]) -> None:
        text = clean_for_speech(raw)
        limit = self._config.max_chars
        while text:
            cut = len(text)
            if cut > limit:
                cut = text.rfind(" ", 1, limit + 1)
                cut = cut if cut > 0 else limit
            chunk, text = text[:cut].strip(), text[cut:].strip()
            if is_speakable(chunk):
                out.append(chunk)
                self.chunk_count += 1

    def _find_cut(self) -> int | None:
        """End of the next chunk in ``_buf``, or None while undecided."""
        stripped = self._buf.lstrip()
        skipped = len(self._buf) - len(stripped)
        if skipped:
            if "\n" in self._buf[:skipped]:
                self._line_start = True
            self._buf = stripped
            self._pos = max(0, self._pos - skipped)
        buf, limit = self._buf, self._config.max_chars
        for i in range(self._pos, min(len(buf), limit)):
            end = self._judge(i)
            if end == _WAIT:
                self._pos = i
                return None
            if end is not None:
                return end
        self._pos = min(len(buf), limit)
        if len(buf) <= limit:
            return None
        cut = buf.rfind(" ", 1, limit + 1)
        return cut if cut > 0 else limit

    def _judge(self, i: int) -> int | None:
        """Is there a boundary at ``_buf[i]``? Its chunk end, None for no, ``_WAIT`` for not yet."""
        buf, ch = self._buf, self._buf[i]
        if ch == "\n":
            return i
        if ch == " " and self.chunk_count == 0 and self._config.first_break_words:
            return self._judge_break_word(i)
        if ch in _SENTENCE_RUN or ch == ";":
            if i > 0 and ch != ";" and buf[i - 1] in _SENTENCE_RUN:
                return None  # judged with the first mark of the run
            return self._judge_sentence(i)
        if ch in ",:" or (ch == ")" and not self._is_list_marker(i)):
            end = self._skip(i + 1, _CLOSERS)
        elif ch == "\u2014" or ch in "-\u2013" and i > 0 and buf[i - 1] == " ":
            end = i + 1
        else:
            return None
        if end < len(buf) and not buf[end].isspace() and ch != "\u2014":
            return None  # 1,000 / 12:30 / well-known
        if end == len(buf):
            return _WAIT
        return end if self._long_enough(buf[:end]) else None

    def _judge_break_word(self, i: int) -> int | None:
        """A first chunk ends at the space ``i`` if a break word follows and enough words precede."""
        buf = self._buf
        start = i + 1
        while start < len(buf) and buf[start] == " ":
            start += 1
        end = start
        while end < len(buf) and buf[end].isalpha():
            end += 1
        if end == len(buf):
            return _WAIT  # the next word may still be growing
        if buf[start:end].lower() not in _BREAK_WORDS or not buf[end].isspace():
            return None
        if len(clean_for_speech(buf[:i]).split()) < self._config.first_break_words:
            return None
        return i

    def _judge_sentence(self, i: int) -> int | None:
        buf = self._buf
        run_end = i + 1 if buf[i] == ";" else self._skip(i, _SENTENCE_RUN)
        end = self._skip(run_end, _CLOSERS)
        if end == len(buf):
            return _WAIT
        if not buf[end].isspace():
            return None  # 3.14, e.g, U.S, 1.2.3
        after = end
        while after < len(buf) and buf[after].isspace():
            after += 1
        if "\n" in buf[end:after] or buf[i] == ";":
            return end
        if after == len(buf):
            return _WAIT
        if buf[after].islower():
            return None  # "e.g. this", "etc. and", "U.S. economy"
        if run_end - i == 1 and buf[i] == "." and self._is_abbreviation(i):
            return None
        return end

    def _is_abbreviation(self, i: int) -> bool:
        """Does the period at ``i`` close an abbreviation, an initial or a list number?"""
        word = self._buf[:i].rsplit(None, 1)[-1] if self._buf[:i].strip() else ""
        word = word.lstrip(_WORD_PREFIX)
        return (
            word.lower() in _ABBREVIATIONS
            or (word != "I" and _INITIALS.fullmatch(word) is not None)
            or self._is_list_marker(i)
        )

    def _is_list_marker(self, i: int) -> bool:
        """``1.`` or ``1)`` at the start of a line."""
        head = self._buf[:i]
        return self._line_start and head.isdigit() and len(head) <= 3

    def _long_enough(self, raw: str) -> bool:
        first = self.chunk_count == 0
        need = self._config.first_min_chars if first else self._config.min_chars
        return len(clean_for_speech(raw)) >= need

    def _skip(self, i: int, chars: str) -> int:
        while i < len(self._buf) and self._buf[i] in chars:
            i += 1
        return i


def split_for_speech(text: str, config: ChunkerConfig | None = None) -> list[str]:
    """Chunks for a whole reply: ``push(text)`` then ``flush()``."""
    chunker = SpeechChunker(config or ChunkerConfig())
    return chunker.push(text) + chunker.flush()
