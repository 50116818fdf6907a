"""Configuration: frozen dataclasses checked in ``__post_init__``, loaded from TOML.

Config objects never see argparse. Every validation error names the key (``vad.aggressiveness``)
and the allowed values, so a user can fix the file without reading code.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from assistant.data import PIPELINES, folder
from assistant.errors import ConfigError

PIPELINES_DIR = folder(PIPELINES)
"""The shipped pipelines: package data (``pipelines/*.toml`` in the source tree)."""


def _check_range(key: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{key} = {value!r} is out of range: allowed {lo} to {hi}")


def _check_choice(key: str, value: object, choices: typing.Iterable[object]) -> None:
    allowed = list(choices)
    if value not in allowed:
        raise ConfigError(f"{key} = {value!r} is not allowed: choose one of {allowed}")


def tcp_address(key: str, url: str) -> tuple[str, int]:
    """A Wyoming address ``tcp://HOST:PORT`` as (host, port); ``ConfigError`` naming ``key`` otherwise."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or not port or parts.path not in ("", "/"):
        raise ConfigError(f"{key} = {url!r} is not allowed: give tcp://HOST:PORT (port 1 to 65535)")
    return parts.hostname, port


@dataclass(frozen=True)
class InputConfig:
    """Where audio comes from."""

    realtime: bool = True
    """Feed file/stdin audio at the speed it would arrive from a microphone."""
    chunk_ms: int = 20
    """Size of the pieces the source hands to the endpointer, in ms."""
    tail_silence_ms: int = 1000
    """Silence appended after a file or stdin ends, so the last utterance can end naturally."""

    def __post_init__(self) -> None:
        _check_range("input.chunk_ms", self.chunk_ms, 10, 200)
        _check_range("input.tail_silence_ms", self.tail_silence_ms, 0, 10_000)


@dataclass(frozen=True)
class VadConfig:
    """Voice activity detection and endpointing (webrtcvad)."""

    aggressiveness: int = 2
    """webrtcvad mode: 0 (least) to 3 (most aggressive at filtering out non-speech)."""
    frame_ms: int = 30
    """VAD frame length; webrtcvad takes 10, 20 or 30 ms."""
    preroll_ms: int = 300
    """Audio kept from before speech starts, so the first syllable is not lost."""
    start_ms: int = 90
    """Voiced audio needed (within a short window) before a turn starts."""
    end_silence_ms: int = 600
    """Silence after speech that ends the turn."""
    min_speech_ms: int = 250
    """Utterances with less voiced audio than this are dropped as noise."""
    max_utterance_ms: int = 15_000
    """An utterance is cut here even if the speaker goes on (TV, noise)."""
    speculate_after_ms: int = 120
    """Silence after which ASR, LLM and TTS start speculatively, before the endpoint; 0 = off."""
    quick_end_silence_ms: int = 300
    """End-of-turn silence when the speculative transcript is clearly a complete sentence."""
    fine_end: bool = True
    """Place the end of speech inside the last voiced frames by a 10 ms energy envelope, and count
    the silences above from there (webrtcvad's last voiced frame ends tens of ms late)."""
    floor_gate: bool = True
    """A frame webrtcvad calls speech must stand 6 dB above the noise floor of the last 1.5 s: a
    steady noise that starts out of silence is not taken for speech for seconds on end."""
    turn_model: bool = True
    """Ask the end-of-turn model (Smart Turn v3.2, manifest ``smart-turn-v3.2``) at each pause
    whether the utterance is complete: complete ends it after ``quick_end_silence_ms``, incomplete
    holds it for ``hold_silence_ms`` (a transcript that ends a question, or a recognised command,
    still ends it sooner). Without the model file or onnxruntime, the endpointer says so and goes
    on with the transcript alone."""
    turn_threshold: float = 0.5
    """The turn model's probability at or above which the utterance counts as complete."""
    agreed_end_silence_ms: int = 200
    """End-of-turn silence when the turn model and the transcript both say the utterance is
    complete; never longer than ``quick_end_silence_ms``."""
    hold_silence_ms: int = 1200
    """End-of-turn silence while the utterance looks unfinished (the turn model says incomplete,
    or the transcript ends on "the", "of", "for"...); never shorter than ``end_silence_ms``."""

    def __post_init__(self) -> None:
        _check_choice("vad.aggressiveness", self.aggressiveness, range(4))
        _check_choice("vad.frame_ms", self.frame_ms, (10, 20, 30))
        _check_range("vad.preroll_ms", self.preroll_ms, 0, 2000)
        _check_range("vad.start_ms", self.start_ms, self.frame_ms, 1000)
        _check_range("vad.end_silence_ms", self.end_silence_ms, 100, 5000)
        _check_range("vad.min_speech_ms", self.min_speech_ms, 0, 5000)
        _check_range("vad.max_utterance_ms", self.max_utterance_ms, 1000, 30_000)
        _check_range("vad.speculate_after_ms", self.speculate_after_ms, 0, self.end_silence_ms)
        quick = self.quick_end_silence_ms
        _check_range("vad.quick_end_silence_ms", quick, self.frame_ms, self.end_silence_ms)
        _check_range("vad.turn_threshold", self.turn_threshold, 0.0, 1.0)
        _check_range("vad.hold_silence_ms", self.hold_silence_ms, 100, 10_000)
        _check_range("vad.agreed_end_silence_ms", self.agreed_end_silence_ms, self.frame_ms, 5000)


@dataclass(frozen=True)
class AsrConfig:
    """Speech recognition (faster-whisper)."""

    model: str = "whisper-tiny.en"
    """A model name from the manifest, or a path to a CTranslate2 Whisper directory."""
    language: str = "en"
    compute_type: str = "int8"
    beam_size: int = 1
    cpu_threads: int = 0
    """0 lets CTranslate2 decide."""
    no_speech_threshold: float = 0.6
    """Segments whose no-speech probability is above this are dropped."""
    min_avg_logprob: float = -1.0
    """Segments less confident than this are dropped when also likely no speech."""
    window: str = "short"
    """``short``: encode only the utterance plus ``window_margin_ms`` (falling back to the full window
    when the result looks wrong); ``full``: Whisper's 30 s window, as faster-whisper does it."""
    window_margin_ms: int = 500
    """Padding after the utterance in the short window, in ms."""
    second_window_ms: int = 6000
    """The second pass, when the short window's result is rejected: a window at least this long
    (the utterance and its margin where longer), decoded once; off the live path a result still
    rejected then goes to the full window with faster-whisper's temperature fallback. 30000:
    straight to the full window. On the bench's 183 items (61 utterances x 3 takes, 24 of them
    rejected): WER 21.1 % with 6 s, 21.5 % with 10 s, 21.6 % with the full window, and 6 s
    decodes in about 100 ms against 560 for the full window, with a fifth of its memory."""
    max_tokens_per_s: float = 5.0
    """Decode bound: at most this many tokens per second of audio, plus ``max_tokens_extra``."""
    max_tokens_extra: int = 10
    """Tokens allowed on top of the per-second bound (short utterances, numbers)."""
    fallback_logprob: float = -1.0
    """A short-window result less confident than this (mean log-probability per token) is redone
    on the full window."""
    short_no_speech_gate: float = 0.85
    """In the short window, text whose no-speech probability is above this is dropped, however
    confident (on silence the short window says "Thank you" at ~0.97; speech stays below ~0.7)."""
    engine: str = "whisper"
    """``whisper``: faster-whisper in this process; ``wyoming``: a Wyoming ASR server at ``asr.url``
    (wyoming-faster-whisper, or another assistant), which then needs no local model."""
    url: str = "tcp://127.0.0.1:10300"
    """The Wyoming server of ``asr.engine = "wyoming"``: ``tcp://HOST:PORT``."""
    during_speech: bool = True
    """On live input, transcribe the utterance while it is spoken (in the background, never in the
    way), so that at the pause the transcript is ready, or only what follows the words two passes
    agreed on is left to decode (the in-process engine, on the short window)."""
    during_speech_every_ms: int = 500
    """Speech between two of those passes, in ms (one more runs where a silence starts)."""

    def __post_init__(self) -> None:
        _check_choice("asr.engine", self.engine, ("whisper", "wyoming"))
        if self.engine == "wyoming":
            tcp_address("asr.url", self.url)
        _check_choice("asr.compute_type", self.compute_type, ("int8", "int8_float32", "float32", "default"))
        _check_range("asr.beam_size", self.beam_size, 1, 10)
        _check_range("asr.cpu_threads", self.cpu_threads, 0, 64)
        _check_range("asr.no_speech_threshold", self.no_speech_threshold, 0.0, 1.0)
        _check_range("asr.min_avg_logprob", self.min_avg_logprob, -10.0, 0.0)
        _check_choice("asr.window", self.window, ("short", "full"))
        _check_range("asr.window_margin_ms", self.window_margin_ms, 0, 5000)
        _check_range("asr.second_window_ms", self.second_window_ms, 1000, 30_000)
        _check_range("asr.max_tokens_per_s", self.max_tokens_per_s, 1.0, 20.0)
        _check_range("asr.max_tokens_extra", self.max_tokens_extra, 0, 200)
        _check_range("asr.fallback_logprob", self.fallback_logprob, -10.0, 0.0)
        _check_range("asr.short_no_speech_gate", self.short_no_speech_gate, 0.0, 1.0)
        _check_range("asr.during_speech_every_ms", self.during_speech_every_ms, 100, 10_000)


DEFAULT_HISTORY_TOKENS = 1024
"""Conversation memory, in tokens, where ``llm.history_tokens`` is -1 and the model says nothing."""


@dataclass(frozen=True)
class LlmConfig:
    """Language model (llama-cpp-python, chat template from the GGUF)."""

    model: str = "smollm2-135m-instruct"
    """A model name from the manifest, or a path to a GGUF file."""
    system_prompt: str = "You are a helpful voice assistant. Answer in one or two short, plain sentences."
    max_tokens: int = 96
    temperature: float = 0.0
    top_p: float = 0.95
    n_ctx: int = 2048
    n_threads: int = 0
    """Threads generating tokens one by one; 0 lets llama-cpp-python decide (half the cores)."""
    n_threads_batch: int = 0
    """Threads evaluating the prompt (a batch); 0 uses every core."""
    yield_to_tts: bool = True
    """Wait between tokens while a chunk is being synthesized (in-process engine): the chunk is
    what the listener waits for, and the LLM writes faster than the reply is spoken."""
    seed: int = 0
    engine: str = "llama"
    """``llama``: in-process llama-cpp-python; ``openai``: an OpenAI-compatible server at ``llm.url``."""
    url: str = "http://127.0.0.1:8080/v1"
    """Base URL of the OpenAI-compatible server (``llm.engine = "openai"``), up to and with ``/v1``."""
    api_key: str = ""
    """Bearer token for the server; empty sends none."""
    remote_model: str = ""
    """Model name sent to the server; empty sends ``llm.model``."""
    request_timeout_s: float = 30.0
    """Seconds to wait for the server to connect and for each streamed piece."""
    reasoning: str = "hidden"
    """Reasoning models (``<think>...</think>``): ``hidden`` thinks but never speaks it;
    ``skip`` prefills an empty think block so the model answers at once; ``budget`` thinks up to
    ``think_budget_tokens``/``think_budget_ms``, then closes the block (action ``thinking_cut``).
    Models without think tokens ignore this."""
    think_budget_tokens: int = 256
    """``budget`` mode: reasoning tokens before the think block is closed."""
    think_budget_ms: int = 0
    """``budget`` mode: reasoning time, in ms from the start of generation, before the block is
    closed; 0 = no time limit."""
    history_tokens: int = -1
    """Tokens of earlier turns kept as conversation memory (oldest dropped first); 0 = none;
    -1 = what the model's manifest entry says (none for the default SmolLM2-135M, which copies
    its earlier answers), else ``DEFAULT_HISTORY_TOKENS``."""
    session_idle_s: float = 300.0
    """Seconds without a turn after which the conversation starts afresh."""
    warm: bool = True
    """Evaluate the system prompt at start-up and keep its KV state on disk (llama engine)."""
    state_cache: str = ""
    """Folder for saved KV states; empty means ``state`` beside the model cache
    (``~/.cache/assistant/state``)."""

    def __post_init__(self) -> None:
        _check_range("llm.max_tokens", self.max_tokens, 1, 8192)
        _check_range("llm.temperature", self.temperature, 0.0, 2.0)
        _check_range("llm.top_p", self.top_p, 0.0, 1.0)
        _check_range("llm.n_ctx", self.n_ctx, 128, 131_072)
        _check_range("llm.n_threads", self.n_threads, 0, 256)
        _check_range("llm.n_threads_batch", self.n_threads_batch, 0, 256)
        if not self.system_prompt.strip():
            raise ConfigError("llm.system_prompt is empty: give the assistant a short instruction")
        _check_choice("llm.engine", self.engine, ("llama", "openai"))
        if self.engine == "openai" and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"llm.url = {self.url!r} is not allowed: give an http:// or https:// URL")
        _check_range("llm.request_timeout_s", self.request_timeout_s, 0.1, 3600.0)
        _check_choice("llm.reasoning", self.reasoning, ("hidden", "skip", "budget"))
        _check_range("llm.think_budget_tokens", self.think_budget_tokens, 1, 32_768)
        _check_range("llm.think_budget_ms", self.think_budget_ms, 0, 600_000)
        if self.reasoning == "budget" and self.think_budget_tokens >= self.max_tokens:
            raise ConfigError(
                f"llm.think_budget_tokens = {self.think_budget_tokens} is out of range: in budget mode"
                f" it must be below llm.max_tokens = {self.max_tokens}, to leave room for the answer"
            )
        _check_range("llm.history_tokens", self.history_tokens, -1, 131_072)
        _check_range("llm.session_idle_s", self.session_idle_s, 0.0, 604_800.0)


@dataclass(frozen=True)
class ChunkerConfig:
    """How LLM text is cut into pieces for TTS."""

    first_min_chars: int = 12
    """The first chunk may end at a clause break once it is this long."""
    first_break_words: int = 2
    """The first chunk may end before a word that opens a clause or phrase (``that``, ``in``,
    ``because``...) once it has this many words; 0 = only at punctuation."""
    min_chars: int = 40
    """Later chunks end at a clause break (comma, colon) only once this long; sentences always end a chunk."""
    max_chars: int = 220
    """A chunk longer than this is cut at the last space."""

    def __post_init__(self) -> None:
        _check_range("chunker.first_min_chars", self.first_min_chars, 1, 500)
        _check_range("chunker.min_chars", self.min_chars, 1, 1000)
        _check_range("chunker.first_break_words", self.first_break_words, 0, 100)
        _check_range("chunker.max_chars", self.max_chars, max(self.min_chars, self.first_min_chars), 2000)


@dataclass(frozen=True)
class TtsConfig:
    """Speech synthesis (piper)."""

    voice: str = "piper-en_US-joe-medium"
    """A voice name from the manifest, or a path to a piper ``.onnx`` file (``.onnx.json`` beside it)."""
    speaker_id: int | None = None
    length_scale: float = 1.0
    """Above 1 speaks slower, below 1 faster."""
    threads: int = 0
    """ONNX threads for synthesis; 0 uses every core (the in-process LLM waits meanwhile, see
    ``llm.yield_to_tts``)."""
    memory_arena: bool = False
    """onnxruntime's CPU memory pool for the voice: synthesis about 20 % faster, but the pool grows
    with every new sentence shape and never shrinks (about 400 MB more after a few hundred
    sentences, 150 MB of it after warm-up in a 1,000-turn soak). Off keeps a long-running daemon's
    memory flat; on suits a short run on a machine with memory to spare."""
    piece_chars: int = 90
    """The voice synthesizes at most about this many characters at once: longer text is cut at a
    clause break (``, ; :``), else at a space. Synthesis holds memory in proportion to the audio
    it makes at once (about 2 MB per character here: a 160-character sentence took 310 MB for the
    moment it was spoken), and a shorter first piece is heard sooner. 0: whole sentences."""
    engine: str = "piper"
    """``piper``: the voice in this process; ``wyoming``: a Wyoming TTS server at ``tts.url``
    (wyoming-piper, or another assistant), which then needs no local voice."""
    url: str = "tcp://127.0.0.1:10200"
    """The Wyoming server of ``tts.engine = "wyoming"``: ``tcp://HOST:PORT``."""
    remote_voice: str = ""
    """Voice name asked of the Wyoming server; empty: the server's default voice."""

    def __post_init__(self) -> None:
        _check_range("tts.length_scale", self.length_scale, 0.3, 3.0)
        _check_range("tts.threads", self.threads, 0, 64)
        if self.piece_chars:
            _check_range("tts.piece_chars", self.piece_chars, 20, 2000)
        _check_choice("tts.engine", self.engine, ("piper", "wyoming"))
        if self.engine == "wyoming":
            tcp_address("tts.url", self.url)


@dataclass(frozen=True)
class OutputConfig:
    """Where speech goes."""

    gap_ms: int = 300
    """Silence written between two turns' replies in a file."""
    apology: str = "Sorry, something went wrong."
    """Spoken when a turn that was to be answered aloud fails (synthesized on first need); empty: none."""
    reprompt: str = "Sorry, could you say that again?"
    """Spoken when no usable transcript was ready in time (``latency.transcript_ms``); synthesized
    at start-up on live input. Empty: silence."""

    def __post_init__(self) -> None:
        _check_range("output.gap_ms", self.gap_ms, 0, 10_000)
        for key in ("apology", "reprompt"):
            if len(getattr(self, key)) > 200:
                raise ConfigError(
                    f"output.{key} is {len(getattr(self, key))} characters long: allowed at most 200"
                )


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


NOISE_LEVELS = ("off", "low", "moderate", "high", "very_high")
"""``audio_processing.noise_suppression``: WebRTC's levels (6, 12, 18, 21 dB of suppression)."""


@dataclass(frozen=True)
class AudioProcessingConfig:
    """WebRTC's audio processing on the microphone, before the wake word, the VAD and ASR (the
    ``aec`` extra, ``pywebrtc-audio``; without it the daemon warns once and hears the raw
    microphone). See ``audio/processing.py`` and the README's "Echo cancellation"."""

    inputs: str = "live"
    """``live``: microphones only (PulseAudio, PortAudio); ``all``: files and stdin too (off by
    default, so the bench and recorded tests hear their audio unaltered); ``none``: never."""
    echo_cancellation: bool = False
    """Remove what the speaker plays (the far end, aligned by the playback clock) from the
    microphone (WebRTC AEC3) before the wake word, the VAD's speech verdicts and ASR. Needs a live
    speaker. The energy echo gate stays as the second line and judges the microphone as captured,
    so the canceller's residue, which jumps on a loaded machine, never makes the assistant
    interrupt itself. Off by default: while the speaker plays, AEC3 also cuts the user's own
    speech (a one-second "Stop." over a reply reached the VAD as 150 ms of speech, and was
    dropped as too little), so the stop word and barge-in are heard more surely without it where
    the speaker is not loud in the microphone; turn it on for a loud speaker beside the mic."""
    noise_suppression: str = "off"
    """``off``, ``low``, ``moderate``, ``high``, ``very_high`` (6, 12, 18, 21 dB). Off by default:
    on the noisy corpus Whisper did worse after ``moderate`` and barely better after ``very_high``
    (README: Echo cancellation)."""
    gain_control: bool = False
    """Automatic gain control (WebRTC AGC2, adaptive digital): quiet or distant speech raised.
    Off by default: it raises the residual echo too, and Whisper and the VAD cope with level."""
    max_gain_db: float = 30.0
    """``gain_control``: the most the adaptive gain may raise the microphone, in dB."""
    reference_margin_ms: int = 30
    """Echo cancellation: the far end fed with a microphone frame runs this far ahead of it (what
    the speaker played up to this long after the frame was captured), so an echo never reaches
    the canceller before its reference, even where the speaker's latency estimate is too long.
    AEC3 finds the delay that remains itself (measured: up to 150 ms fully). Keep it under what
    the speaker queues ahead of its device (about 50 ms with pacat)."""

    def __post_init__(self) -> None:
        _check_choice("audio_processing.inputs", self.inputs, ("live", "all", "none"))
        _check_choice("audio_processing.noise_suppression", self.noise_suppression, NOISE_LEVELS)
        _check_range("audio_processing.max_gain_db", self.max_gain_db, 0.0, 50.0)
        _check_range("audio_processing.reference_margin_ms", self.reference_margin_ms, 0, 300)

    @property
    def active(self) -> bool:
        """Something is to be done to some input."""
        wanted = self.echo_cancellation or self.noise_suppression != "off" or self.gain_control
        return self.inputs != "none" and wanted


@dataclass(frozen=True)
class QueueConfig:
    """Bounds of the queues between stages."""

    audio: int = 200
    text: int = 256

    def __post_init__(self) -> None:
        _check_range("queues.audio", self.audio, 1, 100_000)
        _check_range("queues.text", self.text, 1, 100_000)


@dataclass(frozen=True)
class MqttConfig:
    """The MQTT bridge: broker, topics, limits (see README "MQTT")."""

    enabled: bool = False
    """Run the bridge (``assistant run --mqtt URL`` turns it on)."""
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    """Empty: connect anonymously."""
    password: str = ""
    tls: bool = False
    """Connect over TLS (``mqtts://``)."""
    tls_ca_file: str = ""
    """CA bundle that signed the broker's certificate; empty: the system's trust store."""
    tls_insecure: bool = False
    """Skip the check that the certificate names the host (the chain is still verified)."""
    prefix: str = "assistant"
    """Topics are ``<prefix>/<site>/...``."""
    site: str = "default"
    client_id: str = ""
    """Empty: ``assistant-<site>``."""
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0
    reconnect_min_s: float = 0.5
    """First wait after a lost or failed connection; doubled on each failure up to the max."""
    reconnect_max_s: float = 30.0
    auth_retry_s: float = 300.0
    """Wait after the broker refused our credentials or TLS failed (``auth_failed``)."""
    inbound_queue: int = 32
    """Accepted commands waiting to run; more are refused as ``busy``."""
    rate_limit: float = 10.0
    """Commands per second (sustained); more are refused as ``busy``."""
    rate_burst: int = 20
    max_payload_bytes: int = 65_536
    max_text_chars: int = 2000
    """Longest ``ask``/``say`` text; longer is refused as ``too_long``."""
    hass_discovery: bool = True
    discovery_prefix: str = "homeassistant"
    hermes: bool = False
    """Also speak the Hermes protocol (Rhasspy/Snips clients) on ``hermes/...``."""
    publish_reasoning: bool = False
    """Publish a reasoning model's thinking on ``<prefix>/<site>/reasoning``."""

    def __post_init__(self) -> None:
        _check_range("mqtt.port", self.port, 1, 65_535)
        if not self.host.strip():
            raise ConfigError("mqtt.host is empty: give the broker's host name or address")
        for key in ("prefix", "site", "discovery_prefix"):
            value = getattr(self, key)
            if not value or any(c in value for c in "+#/ \0") or value != value.strip():
                raise ConfigError(
                    f"mqtt.{key} = {value!r} is not allowed: a non-empty topic level without + # / or spaces"
                )
        if self.password and not self.username:
            raise ConfigError("mqtt.password is set but mqtt.username is empty: give both or neither")
        _check_range("mqtt.keepalive_s", self.keepalive_s, 5, 3600)
        _check_range("mqtt.connect_timeout_s", self.connect_timeout_s, 0.5, 120.0)
        _check_range("mqtt.reconnect_min_s", self.reconnect_min_s, 0.01, 60.0)
        _check_range("mqtt.reconnect_max_s", self.reconnect_max_s, self.reconnect_min_s, 3600.0)
        _check_range("mqtt.auth_retry_s", self.auth_retry_s, 0.1, 86_400.0)
        _check_range("mqtt.inbound_queue", self.inbound_queue, 1, 10_000)
        _check_range("mqtt.rate_limit", self.rate_limit, 0.1, 10_000.0)
        _check_range("mqtt.rate_burst", self.rate_burst, 1, 10_000)
        _check_range("mqtt.max_payload_bytes", self.max_payload_bytes, 256, 1 << 20)
        _check_range("mqtt.max_text_chars", self.max_text_chars, 1, 100_000)


@dataclass(frozen=True)
class WyomingConfig:
    """The Wyoming server: our ASR, TTS and microphone for Home Assistant (README "Home Assistant
    (Wyoming)")."""

    enabled: bool = False
    """Run the server (``assistant run --wyoming tcp://HOST:PORT`` turns it on)."""
    host: str = "0.0.0.0"
    """Address to listen on; 0.0.0.0: every interface (Home Assistant usually runs elsewhere)."""
    port: int = 10700
    name: str = "assistant"
    """What Home Assistant calls the services and the satellite (also the zeroconf name)."""
    area: str = ""
    """The satellite's area (room) in Home Assistant; empty: none."""
    asr: bool = True
    """Offer speech recognition (the pipeline's ASR engine)."""
    tts: bool = True
    """Offer speech synthesis (the pipeline's voice), streamed sentence by sentence."""
    satellite: bool = True
    """Offer the microphone and the speaker as an Assist satellite (needs ``--input`` and ``--output``)."""
    zeroconf: bool = True
    """Announce the server as ``_wyoming._tcp`` on the network (when ``zeroconf`` is installed)."""
    max_clients: int = 16
    """Connections served at once; more are refused with ``busy``."""
    max_payload_bytes: int = 262_144
    """The largest payload of one event (an audio chunk is a few KB); larger is refused."""
    max_audio_s: float = 30.0
    """The longest audio one transcription takes: the rest is dropped (an ``error`` ``too_long``
    says so) and what was kept is transcribed."""
    max_text_chars: int = 5000
    """The longest text one synthesis takes; longer is refused as ``too_long``."""
    idle_timeout_s: float = 120.0
    """A connection that sends nothing for this long is closed (Home Assistant pings every 2 s)."""

    def __post_init__(self) -> None:
        if not self.host.strip() or self.host != self.host.strip():
            raise ConfigError(f"wyoming.host = {self.host!r} is not allowed: an address or host name")
        _check_range("wyoming.port", self.port, 1, 65_535)
        if not self.name.strip():
            raise ConfigError("wyoming.name is empty: give the name Home Assistant should show")
        _check_range("wyoming.max_clients", self.max_clients, 1, 1000)
        _check_range("wyoming.max_payload_bytes", self.max_payload_bytes, 4096, 16 << 20)
        _check_range("wyoming.max_audio_s", self.max_audio_s, 1.0, 600.0)
        _check_range("wyoming.max_text_chars", self.max_text_chars, 1, 100_000)
        _check_range("wyoming.idle_timeout_s", self.idle_timeout_s, 5.0, 86_400.0)


DEVICE_DOMAINS = ("light", "switch", "fan")
"""What a declared device may be (``[[devices]]`` ``domain``): things that are switched on and off."""


def _check_topic(key: str, topic: str) -> None:
    if topic and (topic != topic.strip() or any(c in topic for c in "+#\0")):
        raise ConfigError(
            f"{key} = {topic!r} is not allowed: an MQTT topic without + # or surrounding spaces"
        )


@dataclass(frozen=True)
class DeviceConfig:
    """A device the assistant may switch (``[[devices]]``): its names become words hassil matches.

    With a ``command_topic``, "turn on the <name>" publishes ``payload_on`` there (a Tasmota or
    Zigbee2MQTT device needs no Home Assistant); without one, the matched intent is only published
    (``<prefix>/<site>/intent``) for an automation to act on."""

    name: str = ""
    """What the device is called ("desk lamp"); unique among the devices' names and aliases."""
    aliases: tuple[str, ...] = ()
    """Other names for it ("reading light")."""
    area: str = ""
    """The room it is in ("kitchen"): "turn on the kitchen lights" switches every light there."""
    domain: str = "light"
    """One of ``DEVICE_DOMAINS``: which words name it ("the lights", "the fan")."""
    command_topic: str = ""
    """MQTT topic that switches it (``cmnd/desk_lamp/POWER``); empty: none."""
    payload_on: str = "ON"
    payload_off: str = "OFF"
    state_topic: str = ""
    """MQTT topic on which it reports its state (``stat/desk_lamp/POWER``); empty: none."""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ConfigError("devices: a [[devices]] table has no name: give each device a name")
        where = f"devices[name = {self.name!r}]"
        if any(not alias.strip() for alias in self.aliases):
            raise ConfigError(f"{where}.aliases has an empty alias: remove it")
        _check_choice(f"{where}.domain", self.domain, DEVICE_DOMAINS)
        _check_topic(f"{where}.command_topic", self.command_topic)
        _check_topic(f"{where}.state_topic", self.state_topic)
        if self.command_topic and not (self.payload_on and self.payload_off):
            raise ConfigError(f"{where}.payload_on and payload_off must not be empty with a command_topic")

    @property
    def names(self) -> tuple[str, ...]:
        """The name, then the aliases."""
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class IntentsConfig:
    """Commands answered without the LLM (hassil and Home Assistant's sentences; see README
    "Commands and home control")."""

    enabled: bool = True
    """Match each transcript against the command sentences before the LLM sees it."""
    language: str = ""
    """The sentences' language (``en``, ``de``...); empty: ``asr.language``."""
    sentences: tuple[str, ...] = ()
    """The user's own sentence files (hassil YAML); a relative path is read from the config
    folder (``$ASSISTANT_CONFIG_DIR``, else ``~/.config/assistant``)."""
    area: str = ""
    """The room the assistant is in: "turn on the lights" without a room switches the lights of
    this area (every declared one, when empty)."""
    alarm_limit_s: float = 60.0
    """A finished timer's spoken alarm repeats until "stop" or for this long, seconds."""
    timers_file: str = ""
    """Where running timers are kept across restarts; empty: ``timers.json`` in the state
    folder (``$STATE_DIRECTORY`` under systemd, else ``~/.local/state/assistant``)."""

    def __post_init__(self) -> None:
        _check_range("intents.alarm_limit_s", self.alarm_limit_s, 1.0, 3600.0)
        if self.language != self.language.strip() or " " in self.language:
            raise ConfigError(f"intents.language = {self.language!r} is not allowed: a code such as en or de")
        if any(not path.strip() for path in self.sentences):
            raise ConfigError("intents.sentences has an empty path: remove it")


def _check_devices(devices: tuple[DeviceConfig, ...]) -> None:
    """Names and aliases are unique over all devices (case aside): one name, one device."""
    seen: dict[str, str] = {}
    for device in devices:
        for name in device.names:
            key = " ".join(name.lower().split())
            if key in seen:
                raise ConfigError(
                    f"devices[name = {device.name!r}]: {name!r} already names {seen[key]!r}:"
                    " give each device names of its own"
                )
            seen[key] = device.name


def _check_state_topics(devices: tuple[DeviceConfig, ...], mqtt: MqttConfig) -> None:
    """What a state topic carries is heard as the device's report, so it must be a plain topic
    of its own: not the assistant's (``<prefix>/<site>/...``, ``hermes/...``, Home Assistant's
    status), not ``$``-reserved. Checked here, not only by the bridge, so that a reload with such a
    device is refused whole."""
    own = (f"{mqtt.prefix}/{mqtt.site}/", "hermes/", "$")
    for device in devices:
        topic = device.state_topic
        if topic and (
            topic.startswith(own)
            or topic == f"{mqtt.discovery_prefix}/status"
            or len(topic.encode("utf-8")) > 65_535
        ):
            raise ConfigError(
                f"devices[name = {device.name!r}].state_topic = {topic!r} is not allowed: a plain"
                " topic (no + or #) that is not one of the assistant's own"
            )


@dataclass(frozen=True)
class Config:
    """The whole pipeline's configuration."""

    input: InputConfig = field(default_factory=InputConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    chunker: ChunkerConfig = field(default_factory=ChunkerConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    queues: QueueConfig = field(default_factory=QueueConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    deadlines: DeadlineConfig = field(default_factory=DeadlineConfig)
    listen: ListenConfig = field(default_factory=ListenConfig)
    audio_processing: AudioProcessingConfig = field(default_factory=AudioProcessingConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    wyoming: WyomingConfig = field(default_factory=WyomingConfig)
    intents: IntentsConfig = field(default_factory=IntentsConfig)
    devices: tuple[DeviceConfig, ...] = ()
    """The devices commands may switch (``[[devices]]`` tables)."""
    model_dir: str = ""
    """Where models are cached; empty means ``$ASSISTANT_MODEL_DIR`` or the user cache directory."""

    def __post_init__(self) -> None:
        _check_devices(self.devices)
        _check_state_topics(self.devices, self.mqtt)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is tuple:
        (item_type, _) = typing.get_args(tp)
        if not isinstance(value, list):
            expected = f"a list of {_type_name(item_type)}"
            raise ConfigError(f"{key} = {value!r} has the wrong type: expected {expected}")
        return tuple(_coerce(f"{key}[{i}]", item, item_type) for i, item in enumerate(value))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if isinstance(value, bool) != (tp is bool) or not isinstance(value, tp):
            raise ConfigError(f"{key} = {value!r} has the wrong type: expected {_type_name(tp)}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"[{key}] must be a table, got {value!r}")
        return _build(tp, value, key + ".")
    raise ConfigError(f"{key}: unsupported type {tp!r}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"in [{prefix[:-1]}]" if prefix else "at top level"
        raise ConfigError(f"unknown key {prefix}{unknown[0]}: allowed keys {where} are {names}")
    kwargs = {name: _coerce(prefix + name, data[name], hints[name]) for name in names if name in data}
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a ``Config`` from parsed TOML."""
    result: Config = _build(Config, data)
    return result


@dataclass(frozen=True)
class PipelineFile:
    """A pipeline TOML: its name (the file's stem), where it comes from, and its path."""

    name: str
    origin: str
    """``user`` (the user's pipelines folder), ``shipped`` (package data) or ``path`` (given as a file)."""
    path: Path


def user_pipelines_dir() -> Path:
    """``$ASSISTANT_CONFIG_DIR/pipelines``, else ``pipelines`` in the user's config folder
    (``$XDG_CONFIG_HOME/assistant``, by default ``~/.config/assistant``)."""
    base = os.environ.get("ASSISTANT_CONFIG_DIR") or platformdirs.user_config_dir("assistant")
    return Path(base) / "pipelines"


def find_pipelines() -> list[PipelineFile]:
    """Every pipeline that can be named: the user's, then the shipped ones, each sorted by name.

    A user pipeline of the same name as a shipped one wins: lookups take the first of a name.
    """
    found: list[PipelineFile] = []
    for origin, where in (("user", user_pipelines_dir()), ("shipped", PIPELINES_DIR)):
        files = sorted(p for p in where.glob("*.toml") if p.is_file())
        found += [PipelineFile(p.stem, origin, p) for p in files]
    return found


def pipeline_file(name_or_path: str) -> PipelineFile:
    """A pipeline by name (``default``: the user's, else the shipped one), or a path to a TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"--pipeline {name_or_path}: no such file")
        return PipelineFile(candidate.stem, "path", candidate)
    found = find_pipelines()
    for pipeline in found:
        if pipeline.name == name_or_path:
            return pipeline
    known = sorted({p.name for p in found})
    user = user_pipelines_dir()
    raise ConfigError(
        f"--pipeline {name_or_path}: unknown pipeline; choose one of {known} or give a .toml path"
        f" (looked for {name_or_path}.toml in {user}{'' if user.is_dir() else ', which does not exist'},"
        f" and in the shipped {PIPELINES_DIR})"
    )


def resolve_pipeline(name_or_path: str) -> Path:
    """The file of a pipeline name or path (see ``pipeline_file``)."""
    return pipeline_file(name_or_path).path


def pipeline_listing(selected: str) -> list[str]:
    """``assistant pipelines``: where pipelines are looked for, then one line per pipeline (name,
    origin, path), the one ``selected`` (``--pipeline``) marked ``*``, a shadowed shipped one noted."""
    chosen = pipeline_file(selected)
    user = user_pipelines_dir()
    lines = [
        f"user pipelines:    {user}{'' if user.is_dir() else ' (does not exist yet)'}",
        f"shipped pipelines: {PIPELINES_DIR}",
    ]
    rows = ([chosen] if chosen.origin == "path" else []) + find_pipelines()
    width = max((len(p.name) for p in rows), default=0)
    named: set[str] = set()
    for p in rows:
        note = ""
        if p.origin != "path":
            note = "  (hidden by the user's)" if p.name in named else ""
            named.add(p.name)
        lines.append(f"{'*' if p == chosen else ' '} {p.name:{width}}  {p.origin:7}  {p.path}{note}")
    lines.append(f"* the pipeline in use (--pipeline {selected}); a name takes the user's before the shipped")
    return lines


def load_config(name_or_path: str = "default") -> Config:
    """Load and validate a pipeline TOML file."""
    path = resolve_pipeline(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err}") from err
    try:
        return config_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err.message}") from err


def config_sources(
    config: Config, data: dict[str, Any], overrides: dict[str, str] | None = None
) -> list[tuple[str, Any, str]]:
    """Every key of ``config`` as (``asr.model``, value, source), in declaration order.

    The source is ``overrides[key]`` when given (e.g. ``cli --mqtt``), else ``file`` when ``data``
    (the pipeline's parsed TOML) sets the key, else ``default``. For ``assistant doctor``.
    """
    rows: list[tuple[str, Any, str]] = []

    def walk(obj: Any, table: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            key, value = prefix + f.name, getattr(obj, f.name)
            given = isinstance(table, dict) and f.name in table
            if dataclasses.is_dataclass(value):
                walk(value, table[f.name] if given else {}, key + ".")
            elif overrides and key in overrides:
                rows.append((key, value, overrides[key]))
            else:
                rows.append((key, value, "file" if given else "default"))

    walk(config, data, "")
    return rows
