"""Typed, frozen items carried by the queues between stages.

Two kinds: *data* (audio, text) and *control* (turn boundaries, end of stream). Every item
of a turn carries its ``turn_id``; audio before a turn exists (microphone frames) carries
none. Times are milliseconds on the input stream's own timeline (see ``clock.StreamClock``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

SAMPLE_RATE = 16_000
"""Sample rate of all audio between the source and the ASR, in Hz (mono, int16)."""


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every queue item."""


@dataclass(frozen=True, slots=True)
class EndOfStream(Message):
    """Control: the input has ended. Each stage forwards it and stops."""


@dataclass(frozen=True, slots=True)
class AudioIn(Message):
    """Data: a piece of input audio, 16 kHz mono signed 16-bit little-endian."""

    pcm: bytes
    """Raw samples; always a whole number of samples."""
    start_ms: float
    """Position of the first sample on the input timeline, in ms."""
    arrived_ns: int = 0
    """``time.monotonic_ns()`` when the piece's last sample reached the daemon from a live
    device (0 for files): the echo gate lines the microphone up with what the speaker played."""
    raw: bytes | None = field(default=None, repr=False)
    """The same samples as captured, before audio processing (None: ``pcm`` is as captured):
    the echo gate judges the raw microphone, so it never trusts the echo canceller."""


@dataclass(frozen=True, slots=True)
class WakeWordHeard(Message):
    """Control, wake stage to VAD: the wake word model fired here. Speech before this point is
    the wake word (or what is left of it), never a question of its own."""

    at_ms: float
    """Where the detector was sure, on the input timeline (ms): the word ended shortly before."""


@dataclass(frozen=True, slots=True)
class TurnMessage(Message):
    """Base of every item that belongs to a turn."""

    turn_id: int
    """Turn number, counted from 1 in the order the endpointer saw speech."""


@dataclass(frozen=True, slots=True)
class SpeechStarted(TurnMessage):
    """Control: the endpointer heard speech; a turn begins."""

    start_ms: float
    """Input-timeline position of the first voiced frame, in ms."""


@dataclass(frozen=True, slots=True)
class SpeechSoFar(TurnMessage):
    """Data: the utterance so far, while the user is still speaking (live input with
    ``asr.during_speech``): ASR transcribes it when it has nothing else to do."""

    pcm: bytes = field(repr=False)
    """16 kHz mono int16 samples from the same first sample as the ``Utterance`` that will follow."""
    speech_start_ms: float
    """Input-timeline position of the first voiced frame, in ms (the same utterance's)."""
    end_ms: float = 0.0
    """Input-timeline position of the end of ``pcm``, in ms."""
    quiet: bool = False
    """Sent at the first unvoiced frame after speech: if no speech follows, ``pcm`` holds all of
    the utterance's speech, and its transcript is the utterance's."""


@dataclass(frozen=True, slots=True)
class Resumption:
    """Where, in the utterance of a turn that continued an ended one, the new speech begins."""

    start_ms: float
    """Input-timeline position of the new speech's first voiced frame, in ms."""
    offset: int
    """Bytes into the utterance's ``pcm`` where the new speech's audio (its pre-roll) begins."""


@dataclass(frozen=True, slots=True)
class Utterance(TurnMessage):
    """Data: one user's utterance, from pre-roll to the end of speech."""

    pcm: bytes = field(repr=False)
    """16 kHz mono int16 samples, pre-roll included."""
    speech_start_ms: float
    """Input-timeline position of the first voiced frame, in ms."""
    speech_end_ms: float
    """Input-timeline position of the end of the last voiced frame, in ms."""
    endpoint_ms: float
    """Input-timeline position where the endpointer decided the turn was over, in ms."""
    truncated: bool = False
    """True when the utterance was cut at the maximum utterance length."""
    speculative: bool = False
    """True when sent at a pause, before the endpoint; ``endpoint_ms`` is then the pause's position.
    Its audio is held until the turn is committed, and dropped if speech resumes."""
    over_playback: bool = False
    """The speech began while the speaker played (a reply, an alarm): a short one may be the
    stop word (``listen.stop_word``)."""
    resumed: Resumption | None = None
    """Where the speech that continued an ended turn begins (``vad.continue_ms``); None: the
    utterance is one turn's alone."""


@dataclass(frozen=True, slots=True)
class Transcript(TurnMessage):
    """Data: the final transcript of a turn (never empty)."""

    text: str
    """What the user said."""


@dataclass(frozen=True, slots=True)
class Token(TurnMessage):
    """Data: one piece of LLM output text, as generated."""

    text: str
    """The piece's text (may be part of a word, may be empty)."""


@dataclass(frozen=True, slots=True)
class ReplyDone(TurnMessage):
    """Control: the LLM finished (or was stopped) for this turn."""

    text: str
    """The whole reply as generated."""
    finish_reason: str
    """``stop``, ``length`` or ``cancelled``."""


@dataclass(frozen=True, slots=True)
class TextChunk(TurnMessage):
    """Data: speakable text for TTS, cut at a clause or sentence boundary."""

    text: str
    """Cleaned text, markdown and emoji removed; never empty."""
    index: int
    """0 for the turn's first chunk, then 1, 2, ..."""


@dataclass(frozen=True, slots=True)
class TextDone(TurnMessage):
    """Control: no more text chunks for this turn."""


@dataclass(frozen=True, slots=True)
class AudioOut(TurnMessage):
    """Data: synthesized speech for the sink, mono int16."""

    pcm: bytes = field(repr=False)
    """Raw samples, signed 16-bit little-endian."""
    sample_rate: int
    """Hz, the voice's own rate (22,050 for the default voice)."""
    answer: bool = True
    """False for an acknowledgement ("one moment"), True for the answer itself."""


@dataclass(frozen=True, slots=True)
class AudioDone(TurnMessage):
    """Control: the turn's last audio has been handed over."""
