"""What the segmenter reports (``endpointing/segmenter.py``): a turn ``Started``, ``Paused`` (a
speculation point), ``Resumed``, ``Ended`` or ``Dropped``; positions in ms on the input timeline."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SegmenterEvent:
    """Base of what ``Segmenter`` reports."""


@dataclass(frozen=True, slots=True)
class Started(SegmenterEvent):
    """A turn has started (reported at the frame that completed the start window)."""

    start_ms: float
    """Input-timeline position of the turn's first voiced frame, in ms."""
    continues: bool = False
    """The speech came back within ``vad.continue_ms`` of the last turn's end: this turn continues
    it (its audio and ``start_ms`` are the last turn's, and the new speech follows)."""


@dataclass(frozen=True, slots=True)
class Ended(SegmenterEvent):
    """The started turn is over and had enough speech."""

    pcm: bytes = field(repr=False)
    """16 kHz mono int16: pre-roll, the speech, and up to ``tail_ms`` after it."""
    speech_start_ms: float
    """Input-timeline position of the first voiced frame, in ms."""
    speech_end_ms: float
    """Input-timeline position of the end of the last voiced frame, in ms."""
    endpoint_ms: float
    """Input-timeline position where the turn was declared over, in ms."""
    truncated: bool = False
    """True when cut at ``max_utterance_ms`` rather than ended by silence or end of input."""
    judged: str = ""
    """What ended it, for the log: ``transcript <kind>, model <verdict>`` (the judges of the last
    pause, ``none`` for one that had not spoken), ``command``, ``end of input`` or ``max_utterance_ms``."""
    resumed_ms: float | None = None
    """In a turn that continued an ended one: where the new speech's first voiced frame is, ms."""
    resumed_at: int = 0
    """Bytes into ``pcm`` where the new speech's audio (its pre-roll) begins; 0 with no ``resumed_ms``."""


@dataclass(frozen=True, slots=True)
class Paused(SegmenterEvent):
    """Speech has paused for ``speculate_after_ms``: the turn may be over (a speculation point)."""

    pcm: bytes = field(repr=False)
    """16 kHz mono int16 so far: pre-roll, the speech, and the silence since (up to ``tail_ms``)."""
    speech_start_ms: float
    """Input-timeline position of the first voiced frame, in ms."""
    speech_end_ms: float
    """Input-timeline position of the end of the last voiced frame, in ms."""
    resumed_ms: float | None = None
    """In a turn that continued an ended one: where the new speech's first voiced frame is, ms."""
    resumed_at: int = 0
    """Bytes into ``pcm`` where the new speech's audio (its pre-roll) begins; 0 with no ``resumed_ms``."""


@dataclass(frozen=True, slots=True)
class Resumed(SegmenterEvent):
    """Speech came back after a ``Paused``: whatever was started from it is void."""


@dataclass(frozen=True, slots=True)
class Dropped(SegmenterEvent):
    """The started turn is over but had too little voiced audio; nothing should come of it."""

    reason: str
    """Human-readable why, e.g. ``"too little speech: 120 ms < 250 ms"``."""
    voiced_ms: float
    """Voiced audio the turn had, in ms."""
