"""faster-whisper adapter: one synchronous call per utterance, the segment generator consumed here.

faster-whisper's ``transcribe`` returns a lazy generator; decoding happens while it is iterated,
so it must be iterated inside the worker thread, never on the event loop.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..audio.convert import pcm16_to_float
from ..config import AsrConfig
from ..errors import ModelCorruptError, ModelMissingError, StageError

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class AsrResult:
    """What Whisper heard in one utterance."""

    text: str
    """Kept text, stripped; empty when every segment was gated out as non-speech."""
    dropped: tuple[str, ...] = ()
    """Segment texts dropped by the no-speech gate."""
    audio_ms: float = 0.0
    """Duration of the audio transcribed, in ms."""


def gate_segment(no_speech_prob: float, avg_logprob: float, text: str, config: AsrConfig) -> bool:
    """True if a segment should be kept (Whisper's own no-speech rule, plus: it must have words)."""
    if not any(ch.isalnum() for ch in text):
        return False
    return not (no_speech_prob > config.no_speech_threshold and avg_logprob < config.min_avg_logprob)


class WhisperEngine:
    """A loaded faster-whisper model. Thread-safe: one lock around the model."""

    def __init__(self, model_dir: Path, config: AsrConfig) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as err:
            raise ModelMissingError("faster-whisper is not installed: pip install faster-whisper") from err
        self.config = config
        self._lock = threading.Lock()
        try:
            self._model: Any = WhisperModel(
                str(model_dir), device="cpu", compute_type=config.compute_type, cpu_threads=config.cpu_threads
            )
        except (RuntimeError, ValueError, OSError) as err:
            raise ModelCorruptError(f"{model_dir}: faster-whisper cannot load this model: {err}") from err

    def transcribe(self, pcm: bytes) -> AsrResult:
        """Transcribe 16 kHz mono int16 audio; blocks (call it from a worker thread)."""
        audio = pcm16_to_float(pcm)
        kept: list[str] = []
        dropped: list[str] = []
        try:
            with self._lock:
                segments, _info = self._model.transcribe(
                    audio,
                    language=self.config.language or None,
                    beam_size=self.config.beam_size,
                    condition_on_previous_text=False,
                    without_timestamps=True,
                    vad_filter=False,
                )
                for seg in segments:
                    text = seg.text.strip()
                    if gate_segment(seg.no_speech_prob, seg.avg_logprob, text, self.config):
                        kept.append(text)
                    else:
                        dropped.append(text)
        except (RuntimeError, ValueError) as err:
            raise StageError("asr", f"transcription failed: {err}") from err
        if dropped:
            _LOGGER.info("asr gated out as non-speech: %r", dropped)
        return AsrResult(" ".join(kept).strip(), tuple(dropped), len(audio) / 16.0)
