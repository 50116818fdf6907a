"""What a stage may ask of an engine or a sink: declared here, checked by mypy, never probed.

Stages and engines both import this module and nothing of each other. Every engine subclasses
its base (``Transcriber``, ``ChatEngine``, ``Synthesizer``); what an engine *can* do beyond the
least is declared on the base with a default that says "cannot":

    Transcriber    transcribe(pcm) -> AsrResult; reconfigure(asr config);
                   timed (False: cannot): transcribe_timed(pcm, prefix, background=) -> words, times
    ChatEngine     chat(messages, on_token, stop, prefill=, steer=) -> finish reason;
                   count_tokens (an estimate unless the engine has a tokenizer); prime (0: no);
                   thinks / template_opens_think (reasoning); history_tokens (memory it copes with);
                   yielded_s (seconds it stood aside for synthesis); reconfigure(llm config)
    Synthesizer    synthesize(text, on_audio, stop); sample_rate; reconfigure(tts config)
    TurnDetector   complete_probability(pcm) -> 0..1 (an end-of-turn model on the audio)
    Speaker        a live output: interrupt, pause, resume, playback_peak (the echo reference)
    Volume         an output whose loudness can be turned: volume, a gain on what is written
    EchoReference  a live output that tells what was heard when: played (the echo canceller's far end)

Engine methods are synchronous and block; stages call them off the event loop (``asyncio.to_thread``
or the engine's own thread). Any exception an engine raises is mapped to ``errors`` at the engine's
seam where it knows the cause, and by the stage's error boundary otherwise (``stages.base``). See
``docs/architecture.md``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from assistant.config import AsrConfig, LlmConfig, TtsConfig

ChatMessage = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": text}``."""

FULL_WINDOW_MS = 30_000.0
"""Whisper's trained window, in ms (3,000 mel frames)."""


def estimate_tokens(text: str) -> int:
    """A tokenizer-free upper estimate for engines that cannot count (a remote server)."""
    return len(text.encode("utf-8")) // 2 + 1


@dataclass(frozen=True)
class AsrResult:
    """What the ASR heard in one utterance."""

    text: str
    """Kept text, stripped; empty when every segment was gated out as non-speech."""
    dropped: tuple[str, ...] = ()
    """Segment texts dropped by the no-speech gate."""
    audio_ms: float = 0.0
    """Duration of the audio transcribed, in ms."""
    window_ms: float = FULL_WINDOW_MS
    """Length of the encoder window that produced ``text``, in ms (30,000 for the full window)."""
    fallback: bool = False
    """True when the short window's result was rejected and the full window was used."""
    fallback_reason: str = ""
    """Why the short result was rejected (``repetition``, ``too_long``, ``bound``, ``logprob``, ``empty``)."""
    hurried: bool = False
    """True when the full window was skipped for the deadline: ``text`` is the short window's
    (possibly empty: nothing usable was heard in time)."""


@dataclass(frozen=True)
class TimedWord:
    """One transcribed word and where it lies in the audio transcribed."""

    text: str
    """The word as Whisper wrote it, with its punctuation, without its leading space."""
    start_ms: float
    """Where the word starts, ms from the start of the audio given."""
    end_ms: float
    """Where it ends, ms from the start of the audio given."""


@dataclass(frozen=True)
class TimedResult:
    """A transcription with word times (``Transcriber.transcribe_timed``)."""

    words: tuple[TimedWord, ...]
    """The kept text's words, in order (empty when nothing was kept)."""
    result: AsrResult
    """The transcription itself; its ``fallback_reason`` says when it should not be trusted."""


class Transcriber(ABC):
    """Speech to text, one utterance at a time."""

    timed = False
    """The engine can transcribe with word times, continuing a given prefix (``transcribe_timed``),
    in the background, giving way to other calls: the ASR stage may then transcribe during speech."""

    calls = 0
    """Decodes run (a fallback counts twice)."""
    fallbacks = 0
    """Short-window results rejected for the full window."""

    @abstractmethod
    def transcribe(self, pcm: bytes, deadline: float | None = None) -> AsrResult:
        """Transcribe 16 kHz mono int16 audio; blocks. ``deadline`` (``time.monotonic()``
        seconds): when the result is wanted; a second pass that would end after it is skipped and
        the first pass's result returned (``AsrResult.hurried``). Single-pass engines ignore it."""

    def transcribe_timed(
        self, pcm: bytes, prefix: str = "", *, background: bool = False, times: bool = True
    ) -> TimedResult | None:
        """Transcribe 16 kHz mono int16 audio on one short window, the transcript known to begin
        with ``prefix`` (only the rest is decoded), with word times unless ``times`` is False;
        blocks. No second pass: a result to distrust has its ``fallback_reason``.
        ``background``: a pass that must never delay another call: it never waits for the engine
        and stops between its steps once another call waits, returning None. Engines that cannot
        (``timed`` False) return None."""
        return None

    def interrupt_background(self) -> None:  # noqa: B027 - optional: no background passes
        """Stop the background pass under way (if any) at its next step: it returns None. The
        next background pass runs as usual."""

    def reconfigure(self, config: AsrConfig) -> None:  # noqa: B027 - optional: nothing applies live
        """Apply reloaded ``[asr]`` keys that need no model reload."""


class ChatEngine(ABC):
    """A streamed chat reply, stoppable; and what else the engine can do."""

    history_tokens: int | None = None
    """Conversation memory (tokens) this model copes with; None: the general default."""
    yielded_s = 0.0
    """Seconds the last generation stood aside for speech synthesis (``engines.share``)."""

    @abstractmethod
    def chat(
        self,
        messages: list[ChatMessage],
        on_token: Callable[[str], None],
        stop: threading.Event | None = None,
        *,
        prefill: str = "",
        steer: Callable[[], str | None] | None = None,
    ) -> str:
        """Generate a reply, calling ``on_token`` per piece; returns the finish reason (``stop``,
        ``length``, ``cancelled``); blocks. ``prefill`` starts the assistant's message; ``steer``,
        called after each piece, may return text to inject (a closing ``</think>``). Engines that
        do not think ignore both."""

    @property
    def thinks(self) -> bool:
        """The model has think tokens and ``chat`` honours ``prefill`` and ``steer``."""
        return False

    @property
    def template_opens_think(self) -> bool:
        """The chat template's generation prompt already opens a think block."""
        return False

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as plain data (an estimate where the engine has no tokenizer)."""
        return estimate_tokens(text)

    def prime(self, messages: list[ChatMessage]) -> int:
        """Evaluate the start of the next prompt now (between turns); returns the tokens evaluated,
        0 where the engine cannot."""
        return 0

    def reconfigure(self, config: LlmConfig) -> None:  # noqa: B027 - optional: nothing applies live
        """Apply reloaded ``[llm]`` keys that need no model reload."""


class Synthesizer(ABC):
    """Text to speech, streamed in pieces."""

    sample_rate = 22_050
    """Hz of the audio it produces (mono int16)."""

    @abstractmethod
    def synthesize(
        self, text: str, on_audio: Callable[[bytes], None], stop: threading.Event | None = None
    ) -> None:
        """Synthesize ``text``, calling ``on_audio`` per piece; stops early when ``stop`` is set; blocks."""

    def reconfigure(self, config: TtsConfig) -> None:  # noqa: B027 - optional: nothing applies live
        """Apply reloaded ``[tts]`` keys that need no model reload."""


class TurnDetector(ABC):
    """An end-of-turn model: is the utterance so far a complete turn, judged from its audio."""

    @abstractmethod
    def complete_probability(self, pcm: bytes) -> float:
        """0 to 1: how likely the speech in ``pcm`` (16 kHz mono int16, its end at the end) is a
        finished turn; blocks."""


@runtime_checkable
class Speaker(Protocol):
    """A live output device: it can be silenced at once, paused, and reports what it played."""

    def interrupt(self) -> None:
        """Drop what is queued and stop playing now (barge-in)."""

    def pause(self) -> None:
        """Hold playback, keeping the queue (the user may be starting to talk)."""

    def resume(self) -> None:
        """Continue after ``pause``."""

    def playback_peak(self, start_ns: int, end_ns: int) -> float:
        """Peak level (fraction of full scale) played between two ``monotonic_ns`` times."""
        ...


@runtime_checkable
class EchoReference(Protocol):
    """A live output that knows what it played and when (the echo canceller's far end)."""

    def played(self, start_ns: int, count: int) -> bytes:
        """``count`` samples (16 kHz mono int16) heard from ``start_ns`` (``time.monotonic_ns()``)
        on, silence where nothing played. The first call starts keeping them."""
        ...


@runtime_checkable
class Volume(Protocol):
    """An output whose loudness can be turned ("volume up", "mute"): every sample written is
    multiplied by ``volume``, 0.0 (silent) to 1.0 (as synthesized). File outputs too."""

    volume: float
