"""faster-whisper adapter: one synchronous call per utterance, everything decoded inside the call.

Two windows (``asr.window``):

- ``full``: faster-whisper's own ``transcribe``, which pads every input to 30 s of mel frames
  (3,000 frames; tiny.en encodes them in ~330 ms on two cores whatever the utterance's length).
  Its lazy segment generator is consumed here, inside the worker thread.
- ``short`` (default): the mel frames of the utterance plus ``asr.window_margin_ms`` go to
  CTranslate2's encoder directly (it accepts fewer frames; whisper.cpp calls this ``audio_ctx``),
  then one greedy/beam decode (with timestamps) bounded by the audio's duration; segments placed
  after the audio's end are dropped and a transcript that starts over is cut (``trim_loop``,
  the short window's usual failure). When the result still looks wrong
  (repetition, too many words for the duration, the decode bound reached, low confidence, or
  nothing kept although the audio is loud) the utterance is transcribed again, once, on a window
  of ``asr.second_window_ms`` (6 s: as accurate as the full window on the bench's corpus, five
  times faster), and the fallback is counted; off the live path a result still rejected goes on
  to the full window.

``transcribe_timed`` runs the short window alone, its decoder given the transcript's first words
(a forced prefix: only the rest is decoded), with word times (``whisper_words``): the ASR
stage's passes during speech, and its transcription at the pause once words are agreed on. A
pass in the background gives way to any other call: it never waits for the model, and stops
between its steps (encoding, decoding, alignment) once another call waits, which therefore
waits at most for one step.

The no-speech gate (``gate_segment``) applies on both paths. The pure rules (bounds, repetition,
the fallback rule) are in ``whisper_rules``, the word times and the prefix in ``whisper_words``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from assistant.audio.convert import pcm16_to_float
from assistant.config import AsrConfig
from assistant.contracts import FULL_WINDOW_MS, AsrResult, TimedResult, Transcriber
from assistant.engines.whisper_rules import (
    FRAME_MS,
    collapse_repetition,
    fallback_reason,
    gate_segment,
    inside_segments,
    max_new_tokens,
    trim_loop,
    window_frames,
)
from assistant.engines.whisper_words import align_words, prefix_prompt
from assistant.errors import AssistantError, ModelCorruptError, ModelMissingError, StageError

_LOGGER = logging.getLogger(__name__)

TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""faster-whisper's temperature fallback, for transcription off the live path."""
FULL_WINDOW_GUESS_S = 0.5
"""How long the full window is taken to need before it has run once, in s (a narrower second
window in proportion, up to half of it)."""


@dataclass(frozen=True)
class Decoded:
    """One short-window decode."""

    text: str
    """Text of the segments that start inside the audio, cut where it starts over (``trim_loop``)."""
    avg_logprob: float
    """Mean log-probability per token (faster-whisper's definition)."""
    no_speech_prob: float
    hit_bound: bool
    """The decode stopped at its token bound rather than at end-of-text."""
    looped: bool = False
    """The decoder started its transcript over and the repeat was cut off."""
    tokens: tuple[int, ...] = ()
    """The text tokens of the segments kept (before ``trim_loop``): what word times align."""
    encoded: Any = None
    """The window's encoding (a CTranslate2 ``StorageView``), which word times are found in."""


def _no_progress_monitor() -> None:
    """faster-whisper's full window opens a (disabled) tqdm progress bar, whose first use starts
    tqdm's monitor thread for the life of the process: a thread that appears mid-run."""
    try:
        import tqdm
    except ImportError:
        return
    tqdm.tqdm.monitor_interval = 0


class WhisperEngine(Transcriber):
    """A loaded faster-whisper model. Thread-safe: one lock around the model."""

    def __init__(self, model_dir: Path, config: AsrConfig) -> None:
        try:
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens
        except ImportError as err:
            raise ModelMissingError("faster-whisper is not installed: pip install faster-whisper") from err
        _no_progress_monitor()
        self.config = config
        self._lock = threading.Lock()
        self._waiting = 0
        """Calls waiting for the model that a background pass gives way to."""
        self._waiting_lock = threading.Lock()
        self._interrupted = False
        """``interrupt_background`` was called: the background pass under way stops."""
        self.calls = 0
        """Utterances transcribed."""
        self.fallbacks = 0
        """Short-window results redone on a second pass (a wider window, or the full one)."""
        self.hurried = 0
        """Short-window results kept, although rejected, for want of time for the second pass."""
        self.background = 0
        """Background passes (``transcribe_timed(background=True)``) run to their end."""
        self.gave_way = 0
        """Background passes that stopped, or never started, for a transcription waiting."""
        self.full_s = FULL_WINDOW_GUESS_S * min(1.0, config.second_window_ms / FULL_WINDOW_MS * 2)
        """How long the second pass takes here: the last run, or 70 % of the estimate before if
        that is longer (a slow run is remembered for a while)."""
        try:
            self._model: Any = WhisperModel(
                str(model_dir), device="cpu", compute_type=config.compute_type, cpu_threads=config.cpu_threads
            )
        except (RuntimeError, ValueError, OSError) as err:
            raise ModelCorruptError(f"{model_dir}: faster-whisper cannot load this model: {err}") from err
        multilingual = bool(self._model.model.is_multilingual)
        self._tokenizer: Any = Tokenizer(
            self._model.hf_tokenizer, multilingual, task="transcribe", language=(config.language or "en")
        )
        self._prompt: list[int] = list(self._tokenizer.sot_sequence)
        """The short path decodes with timestamps (no ``<|notimestamps|>``), to see where text lies."""
        self._suppress: list[int] = list(get_suppressed_tokens(self._tokenizer, [-1]))
        self._short_ok = not multilingual or bool(config.language)
        """The short path needs a known language (it does not run language detection)."""
        self.timed = self._short_ok

    def reconfigure(self, config: AsrConfig) -> None:
        """Decoding and gating keys apply from the next utterance."""
        self.config = config

    def transcribe(self, pcm: bytes, deadline: float | None = None) -> AsrResult:
        """Transcribe 16 kHz mono int16 audio; blocks (call it from a worker thread). A rejected
        short-window result is redone on the full window only if that (as long as it took last
        time) ends before ``deadline``; otherwise it is returned as it is, ``hurried``. With a
        deadline (the live path) the full window decodes once, without temperature fallback."""
        try:
            audio = pcm16_to_float(pcm)
            audio_ms = len(audio) / 16.0
            with self._model_first():
                self.calls += 1
                short = self.config.window == "short" and self._short_ok
                if short and audio_ms + self.config.window_margin_ms < FULL_WINDOW_MS:
                    result = self._transcribe_short(audio, audio_ms)
                    if not result.fallback_reason:
                        return result
                    if deadline is not None and time.monotonic() + self.full_s > deadline:
                        self.hurried += 1
                        _LOGGER.info(
                            "asr short window rejected (%s) but no time for the full window: %r",
                            result.fallback_reason,
                            result.text,
                        )
                        return replace(result, hurried=True)
                    self.fallbacks += 1
                    return self._second_pass(audio, audio_ms, result, live=deadline is not None)
                return self._transcribe_full(audio, audio_ms, live=deadline is not None)
        except AssistantError:
            raise
        except Exception as err:  # CTranslate2's RuntimeError, or faster-whisper's own
            raise StageError("asr", f"transcription failed: {type(err).__name__}: {err}") from err

    def _second_pass(
        self, audio: npt.NDArray[np.float32], audio_ms: float, first: AsrResult, *, live: bool
    ) -> AsrResult:
        """A rejected short-window result redone on a wider window (``asr.second_window_ms``),
        or on the full window where that is no wider or (off the live path) also rejected."""
        wide_ms = self.config.second_window_ms
        wider = wide_ms < FULL_WINDOW_MS and audio_ms + self.config.window_margin_ms < wide_ms
        where = f"a {wide_ms / 1000:g} s window" if wider else "the full window"
        _LOGGER.info("asr short window rejected (%s): %r; using %s", first.fallback_reason, first.text, where)
        started = time.monotonic()
        if wider:
            wide = self._transcribe_short(audio, audio_ms, min_ms=wide_ms)
            if live or not wide.fallback_reason:
                self.full_s = max(self.full_s * 0.7, time.monotonic() - started)
                return replace(wide, fallback=True, fallback_reason=first.fallback_reason)
        full = self._transcribe_full(audio, audio_ms, live=live)
        if not wider:
            self.full_s = max(self.full_s * 0.7, time.monotonic() - started)
        return AsrResult(full.text, full.dropped, audio_ms, FULL_WINDOW_MS, True, first.fallback_reason)

    @contextmanager
    def _model_first(self) -> Iterator[None]:
        """Hold the model, ahead of any background pass (which gives way at its next step)."""
        with self._waiting_lock:
            self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        try:
            yield
        finally:
            self._lock.release()

    def transcribe_timed(
        self, pcm: bytes, prefix: str = "", *, background: bool = False, times: bool = True
    ) -> TimedResult | None:
        """The short window alone, continuing ``prefix``, with word times (see ``Transcriber``)."""
        audio = pcm16_to_float(pcm)
        audio_ms = len(audio) / 16.0
        if not self.timed or audio_ms + self.config.window_margin_ms >= FULL_WINDOW_MS:
            return None
        if background and (self._waiting or not self._lock.acquire(blocking=False)):
            self.gave_way += 1
            return None
        if background:
            self._interrupted = False  # an interruption was meant for an earlier pass
        try:
            with _held(self._lock) if background else self._model_first():
                timed = self._timed(audio, audio_ms, prefix, background, times)
        except _GaveWay:
            timed = None
        except AssistantError:
            raise
        except Exception as err:  # CTranslate2's RuntimeError
            raise StageError("asr", f"transcription failed: {type(err).__name__}: {err}") from err
        if background:
            if timed is None:
                self.gave_way += 1
            else:
                self.background += 1
        return timed

    def _timed(
        self, audio: npt.NDArray[np.float32], audio_ms: float, prefix: str, background: bool, times: bool
    ) -> TimedResult:
        """Features, encoding, decoding, alignment; a background pass gives way (``_GaveWay``)
        between two of them."""
        window, content = self._window(audio, audio_ms)
        prompt = prefix_prompt(self._tokenizer, self._prompt, prefix)
        max_new = max_new_tokens(audio_ms, self.config)
        decoded = self._decode_window(window, max_new, audio_ms, prompt, give_way=background)
        frames = window.shape[1]
        result = self._judge(decoded, audio, audio_ms, frames)
        if not result.text or not times:
            return TimedResult((), result)
        self._give_way(background)
        words = align_words(
            self._model.model, self._tokenizer, decoded.encoded, list(decoded.tokens), content
        )
        kept = len(result.text.split())
        if len(words) < kept:  # the alignment failed: no times, the result cannot be joined
            return TimedResult((), replace(result, fallback_reason=result.fallback_reason or "alignment"))
        return TimedResult(tuple(words[:kept]), result)

    def _window(
        self, audio: npt.NDArray[np.float32], audio_ms: float, min_ms: float = 0.0
    ) -> tuple[npt.NDArray[np.float32], int]:
        """The short window's mel frames (``[n_mels, frames]``; at least ``min_ms`` of them), and
        how many of them are audio."""
        frames = max(window_frames(audio_ms, self.config.window_margin_ms), window_frames(min_ms, 0))
        features = self._model.feature_extractor(audio)
        content = features[:, : features.shape[-1] - 1]
        window = np.zeros((content.shape[0], frames), dtype=np.float32)
        window[:, : min(frames, content.shape[1])] = content[:, :frames]
        return window, min(frames, content.shape[1])

    def _transcribe_short(
        self, audio: npt.NDArray[np.float32], audio_ms: float, min_ms: float = 0.0
    ) -> AsrResult:
        """The short-window path (a window of at least ``min_ms``); ``fallback_reason`` set when
        its result should not be trusted."""
        window, _ = self._window(audio, audio_ms, min_ms)
        decoded = self._decode_window(window, max_new_tokens(audio_ms, self.config), audio_ms)
        return self._judge(decoded, audio, audio_ms, window.shape[1])

    def _judge(
        self, decoded: Decoded, audio: npt.NDArray[np.float32], audio_ms: float, frames: int
    ) -> AsrResult:
        """A short-window decode gated, and ``fallback_reason`` set when it should not be trusted."""
        text = decoded.text.strip()
        kept = gate_segment(decoded.no_speech_prob, decoded.avg_logprob, text, self.config)
        # the model is sure there is no speech: trust it (no fallback), however confident the text
        sure_silent = decoded.no_speech_prob > self.config.short_no_speech_gate
        kept = kept and not sure_silent
        loud = not sure_silent and audio.size > 0
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if loud else 0.0
        reason = fallback_reason(
            text if kept else "", decoded.avg_logprob, audio_ms, decoded.hit_bound, rms, self.config,
            decoded.looped,
        )  # fmt: skip
        if not kept and not reason:
            _LOGGER.info("asr gated out as non-speech: %r", text)
        return AsrResult(
            text if kept else "", () if kept else (text,), audio_ms, frames * FRAME_MS, False, reason
        )

    def interrupt_background(self) -> None:
        """The background pass under way stops at its next step (see ``Transcriber``)."""
        self._interrupted = True

    def _give_way(self, background: bool) -> None:
        """A background pass stops here when another call waits for the model, or when it was
        interrupted."""
        if background and (self._waiting or self._interrupted):
            raise _GaveWay

    def _decode_window(
        self,
        window: npt.NDArray[np.float32],
        max_new: int,
        audio_ms: float,
        prompt: list[int] | None = None,
        *,
        give_way: bool = False,
    ) -> Decoded:
        """Encode a ``[n_mels, frames]`` window and decode it once, after ``prompt`` (default: the
        start of a transcript; it may force a prefix, see ``whisper_words.prefix_prompt``), at
        most ``max_new`` tokens besides the prefix.

        Decoded with timestamps: segments the model places at or after the end of the audio
        (``audio_ms``, less 100 ms) are the window's padding talking and are dropped.
        """
        prompt = prompt or self._prompt
        forced = len(prompt) - len(self._prompt)  # a prefix's tokens come back with the result
        self._give_way(give_way)
        encoded = self._model.encode(window)
        self._give_way(give_way)
        result = self._model.model.generate(
            encoded,
            [prompt],
            beam_size=self.config.beam_size,
            max_length=len(prompt) + max_new,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        tokens: list[int] = list(result.sequences_ids[0])
        cum_logprob = result.scores[0] * len(tokens)  # scores are normalised by length (penalty 1)
        inside = inside_segments(tokens, self._tokenizer.timestamp_begin, audio_ms)
        raw = str(self._tokenizer.decode(inside))
        hit_bound = len(tokens) - forced >= max_new
        text = trim_loop(raw, hit_bound)
        return Decoded(
            text=text,
            avg_logprob=float(cum_logprob / (len(tokens) + 1)),
            no_speech_prob=float(result.no_speech_prob),
            hit_bound=hit_bound,
            looped=text != raw.strip(),
            tokens=tuple(inside),
            encoded=encoded,
        )

    def _transcribe_full(self, audio: npt.NDArray[np.float32], audio_ms: float, *, live: bool) -> AsrResult:
        """faster-whisper's own 30 s window path (decode bounded by the duration; loops collapsed).
        ``live`` (a deadline was given): one decode at temperature 0, never faster-whisper's
        temperature fallback (further decodes at 0.2, 0.4...: seconds); otherwise its default."""
        kept: list[str] = []
        dropped: list[str] = []
        segments, _info = self._model.transcribe(
            audio,
            language=self.config.language or None,
            beam_size=self.config.beam_size,
            condition_on_previous_text=False,
            temperature=0.0 if live else TEMPERATURES,
            without_timestamps=True,
            vad_filter=False,
            max_new_tokens=max_new_tokens(min(audio_ms, FULL_WINDOW_MS), self.config),
        )
        for seg in segments:
            text = seg.text.strip()
            if gate_segment(seg.no_speech_prob, seg.avg_logprob, text, self.config):
                kept.append(text)
            else:
                dropped.append(text)
        if dropped:
            _LOGGER.info("asr gated out as non-speech: %r", dropped)
        text = " ".join(kept).strip()
        collapsed = collapse_repetition(text)
        if collapsed != text:
            _LOGGER.info("asr repetition collapsed: %r -> %r", text, collapsed)
        return AsrResult(collapsed, tuple(dropped), audio_ms, FULL_WINDOW_MS)


class _GaveWay(Exception):
    """A background pass stopped for another call."""


@contextmanager
def _held(lock: threading.Lock) -> Iterator[None]:
    """A lock already acquired, released on leaving."""
    try:
        yield
    finally:
        lock.release()
