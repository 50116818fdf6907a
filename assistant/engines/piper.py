"""piper-tts adapter: text in, int16 audio chunks out, stoppable between sentences."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from assistant.config import TtsConfig
from assistant.contracts import Synthesizer
from assistant.engines.share import CoreShare
from assistant.errors import AssistantError, ModelCorruptError, ModelMissingError, StageError


class PiperEngine(Synthesizer):
    """A loaded piper voice. Thread-safe: one lock around the ONNX session."""

    def __init__(
        self,
        onnx_path: Path,
        config: TtsConfig,
        *,
        share: CoreShare | None = None,
        after: Callable[[], object] | None = None,
    ) -> None:
        """``share``: held while synthesizing, so an LLM sharing it waits between tokens.
        ``after``: called after each text is synthesized, outside the share (the daemon gives the
        heaps' free pages back there, ``service.allocator.trim``: synthesis frees the most memory,
        about 2 MB per character spoken at once, and glibc keeps it otherwise)."""
        self.after = after
        try:
            from piper import PiperVoice
            from piper.config import SynthesisConfig
        except ImportError as err:
            raise ModelMissingError("piper-tts is not installed: pip install piper-tts") from err
        self.config = config
        self.share = share or CoreShare()
        self._lock = threading.Lock()
        try:
            self._voice: Any = _load_voice(PiperVoice, onnx_path, config.threads, arena=config.memory_arena)
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelCorruptError(f"{onnx_path}: piper cannot load this voice: {err}") from err
        self._syn_config = SynthesisConfig(speaker_id=config.speaker_id, length_scale=config.length_scale)
        self.sample_rate: int = int(self._voice.config.sample_rate)
        """Hz of the audio this voice produces."""

    def reconfigure(self, config: TtsConfig) -> None:
        """New speaker and speed (the voice itself needs a restart)."""
        from piper.config import SynthesisConfig

        self.config = config
        self._syn_config = SynthesisConfig(speaker_id=config.speaker_id, length_scale=config.length_scale)

    def synthesize(
        self, text: str, on_audio: Callable[[bytes], None], stop: threading.Event | None = None
    ) -> None:
        """Speak ``text``, calling ``on_audio`` with int16 bytes per sentence; blocks."""
        try:
            with self._lock, self.share.synthesizing():
                for piece in pieces(text, self.config.piece_chars):
                    for chunk in self._voice.synthesize(piece, self._syn_config):
                        if stop is not None and stop.is_set():
                            return
                        on_audio(chunk.audio_int16_bytes)
        except AssistantError:
            raise
        except Exception as err:  # onnxruntime raises its own exception types
            raise StageError(
                "tts", f"synthesis failed for {text[:60]!r}: {type(err).__name__}: {err}"
            ) from err
        finally:
            if self.after is not None:
                self.after()

    def synthesize_all(self, text: str) -> bytes:
        """The whole of ``text`` as one int16 buffer."""
        parts: list[bytes] = []
        self.synthesize(text, parts.append)
        return b"".join(parts)


_SENTENCE_END = re.compile(r"[.!?\u2026][\"')\u201d\u2019]*\s")
_CLAUSE_BREAK = re.compile(r"[,;:\u2014]\s")


DIGIT_WEIGHT = 5
"""Characters a digit counts for in a piece's length: the voice reads numbers out ("1969":
"nineteen sixty-nine"), and its memory follows the audio, not the text (a 90-character piece with
a date in full took a 94 MB block, ordinary ones 20-50 MB)."""


def spoken_length(text: str) -> int:
    """``text``'s length as the voice will read it: each digit counts ``DIGIT_WEIGHT`` characters."""
    return len(text) + (DIGIT_WEIGHT - 1) * sum(c.isdigit() for c in text)


def _within(text: str, limit: int) -> int:
    """How many of ``text``'s first characters have a ``spoken_length`` of at most ``limit``."""
    weight = 0
    for index, char in enumerate(text):
        weight += DIGIT_WEIGHT if char.isdigit() else 1
        if weight > limit:
            return index
    return len(text)


def pieces(text: str, limit: int) -> list[str]:
    """``text`` cut into pieces of a ``spoken_length`` of at most about ``limit`` characters (0: no
    limit), at the last sentence end before the limit, else at the last clause break (``, ; : —``
    then a space) that leaves the piece a third of the limit, else at the last space; a word
    longer than the limit stays whole."""
    text = text.strip()
    if not limit or spoken_length(text) <= limit:
        return [text] if text else []
    reach = _within(text, limit)
    head = text[: reach + 1]
    ends = [m.end() for m in _SENTENCE_END.finditer(head)]
    breaks = ends or [m.end() for m in _CLAUSE_BREAK.finditer(head) if m.end() >= reach // 3]
    cut = breaks[-1] if breaks else head.rfind(" ") + 1
    if cut <= 0:
        cut = text.find(" ", reach) + 1 or len(text)
    return [text[:cut].strip(), *pieces(text[cut:], limit)]


def _load_voice(voice_class: Any, onnx_path: Path, threads: int, *, arena: bool = False) -> Any:
    """Like ``PiperVoice.load``, with the ONNX session's threads bounded (0: every core) and not
    spinning, so idle synthesis threads never busy-wait on cores the LLM needs."""
    import json

    import onnxruntime
    from piper.config import PiperConfig
    from piper.phonemize_espeak import ESPEAK_DATA_DIR

    config = PiperConfig.from_dict(json.loads(Path(f"{onnx_path}.json").read_text(encoding="utf-8")))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = arena  # tts.memory_arena: the pool grows and never shrinks
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(
        str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return voice_class(
        config=config, session=session, espeak_data_dir=Path(ESPEAK_DATA_DIR), download_dir=Path.cwd()
    )
