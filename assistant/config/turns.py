"""How turns are timed and heard: the latency budget (``[latency]``), the engines' hard deadlines
(``[deadlines]``), when the assistant listens (``[listen]``), and the queues' bounds (``[queues]``)."""

from __future__ import annotations

from dataclasses import dataclass

from assistant.config.checks import _check_choice, _check_range
from assistant.errors import ConfigError


@dataclass(frozen=True)
class DeadlineConfig:
    """How long a stage's model call may take before it is abandoned as ``stage_timeout``.

    These are hard limits against a hung engine (a stalled server, a stuck device), not latency
    targets: ``[latency]`` holds those. The turn fails with a spoken apology; the next turn works."""

    asr_s: float = 15.0
    """One transcription, seconds."""
    llm_stall_s: float = 30.0
    """The LLM's first piece, and every gap between pieces, seconds (a long reply is not cut)."""
    tts_s: float = 20.0
    """The first audio of one chunk, and every gap between its pieces, seconds."""
    output_s: float = 30.0
    """One write to the audio sink, seconds."""

    def __post_init__(self) -> None:
        for key in ("asr_s", "llm_stall_s", "tts_s", "output_s"):
            _check_range(f"deadlines.{key}", getattr(self, key), 0.05, 3600.0)


@dataclass(frozen=True)
class LatencyConfig:
    """The latency budget and what the tracker may do to keep it (see DESIGN.md, Latency)."""

    budget_ms: int = 800
    """The user hears something within this long after they stop speaking."""
    ack: bool = True
    """Play a short acknowledgement when the answer's first audio would miss the budget."""
    ack_margin_ms: int = 100
    """The acknowledgement starts this long before the deadline, if the answer has not and is not
    expected in time; one expected in time is checked again 40 ms before the deadline."""
    acks: tuple[str, ...] = ("Hmm.", "Sure.", "So,")
    """Acknowledgements, synthesized at start-up and used in turn. Short ones: the answer waits
    until the acknowledgement has been heard."""
    transcript_ms: int = 750
    """Live input: the transcript is wanted this long after the end of speech at the latest. The full
    window runs only if it can end by then (else the short window's words are used), and a
    transcription still running then is abandoned: with no usable words, the user hears
    ``output.reprompt`` (action ``reprompt``) rather than silence. 0: no such limit. (At 550 ms the
    full window, about 500 ms here, never fitted, and the bench's WER went from 9.6 to 13.9 %.)"""
    hold_ms: int = 2500
    """The answer's deadline: when it has not started playing this long after the end of speech
    (the LLM slow to begin, or the voice slow to speak its first chunk), the user hears one of
    ``holds`` (after the acknowledgement, if one was played), action ``first_token_late`` (the
    LLM had not begun its answer) or ``first_audio_late`` (the first chunk was still being
    synthesized); once per turn. ``[deadlines]`` still ends a stalled engine's turn
    (``stage_timeout``). 0: no holding phrase."""
    holds: tuple[str, ...] = ("One moment.",)
    """Holding phrases, synthesized at start-up and used in turn."""
    asr_ms: int = 150
    """Per-stage budgets (ms): a turn whose stage takes longer is counted as over budget."""
    llm_first_token_ms: int = 250
    tts_first_audio_ms: int = 250
    stats_window: int = 200
    """Turns over which the rolling p50/p95/p99 are computed."""

    def __post_init__(self) -> None:
        _check_range("latency.budget_ms", self.budget_ms, 100, 10_000)
        _check_range("latency.ack_margin_ms", self.ack_margin_ms, 0, self.budget_ms)
        _check_range("latency.transcript_ms", self.transcript_ms, 0, 60_000)
        if self.hold_ms:
            _check_range("latency.hold_ms", self.hold_ms, self.budget_ms, 60_000)
            if not any(text.strip() for text in self.holds):
                raise ConfigError(
                    "latency.holds is empty: give at least one phrase, or set latency.hold_ms = 0"
                )
        for key in ("asr_ms", "llm_first_token_ms", "tts_first_audio_ms"):
            _check_range(f"latency.{key}", getattr(self, key), 1, 60_000)
        _check_range("latency.stats_window", self.stats_window, 1, 100_000)
        if self.ack and not any(text.strip() for text in self.acks):
            raise ConfigError("latency.acks is empty: give at least one phrase, or set latency.ack = false")


@dataclass(frozen=True)
class ListenConfig:
    """When the assistant listens, and what interrupts it."""

    mode: str = "always"
    """``always``: every utterance is a turn; ``wake``: only after a wake word (then follow-ups
    without it for ``follow_up_s``); ``push``: the microphone opens for one turn on ``listen``
    (MQTT, or Space or Enter in a terminal; Esc or q cancels)."""
    wake_engine: str = "auto"
    """``wake`` mode: ``micro``: a wake word model (``wake_model``, the ``pymicro-wakeword``
    package) listens to every frame and nothing is transcribed until it hears its word;
    ``phrase``: every utterance is transcribed and must begin with one of ``wake_phrases``;
    ``auto``: ``micro`` where the package loads, else ``phrase`` (logged, with what to install)."""
    wake_model: str = "okay_nabu"
    """``micro``: a shipped model (``okay_nabu``, ``hey_jarvis``, ``hey_mycroft``, ``alexa``) or the
    path of a microWakeWord model's ``.json`` (its ``.tflite`` beside it)."""
    wake_threshold: float = 0.0
    """``micro``: the model's smoothed probability (0-1) above which its word is heard; 0: the
    model's own (0.85 for okay_nabu). Lower misses less and wakes falsely more."""
    wake_earcon: bool = False
    """``micro``: play a short tone when the wake word is heard."""
    wake_phrases: tuple[str, ...] = ("hey assistant", "ok assistant")
    """``phrase``: what an utterance must begin with."""
    follow_up_s: float = 8.0
    """``wake`` mode: seconds after a reply during which no wake word is needed."""
    barge_in: bool = True
    """Speech during a reply stops playback and cancels the reply. Off, it does neither: a question
    asked over a reply is answered after it, and only the stop word stops a reply."""
    stop_word: bool = True
    """While the speaker plays (a reply, a timer's alarm), a short utterance is checked for the
    stop word ("stop", "cancel", "be quiet", "enough"...): it stops what plays and is no turn of
    its own. In wake mode it needs no wake word."""
    echo_margin_db: float = 6.0
    """While speaking, the user must be this much louder than the assistant's own voice."""

    def __post_init__(self) -> None:
        _check_choice("listen.mode", self.mode, ("always", "wake", "push"))
        _check_choice("listen.wake_engine", self.wake_engine, ("auto", "micro", "phrase"))
        _check_range("listen.wake_threshold", self.wake_threshold, 0.0, 0.99)
        if not self.wake_model.strip():
            raise ConfigError("listen.wake_model is empty: name a shipped model (okay_nabu) or a .json path")
        _check_range("listen.follow_up_s", self.follow_up_s, 0.0, 600.0)
        _check_range("listen.echo_margin_db", self.echo_margin_db, 0.0, 40.0)
        phrases = any(p.strip() for p in self.wake_phrases)
        if self.mode == "wake" and self.wake_engine != "micro" and not phrases:
            raise ConfigError(
                "listen.wake_phrases is empty: wake mode with the phrase engine needs at least one phrase"
            )


@dataclass(frozen=True)
class QueueConfig:
    """Bounds of the queues between stages."""

    audio: int = 200
    text: int = 256

    def __post_init__(self) -> None:
        _check_range("queues.audio", self.audio, 1, 100_000)
        _check_range("queues.text", self.text, 1, 100_000)
