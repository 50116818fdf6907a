"""Configuration: frozen dataclasses checked in ``__post_init__``, loaded from TOML.

Config objects never see argparse. Every validation error names the key (``vad.aggressiveness``)
and the allowed values, so a user can fix the file without reading code.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

PIPELINES_DIR = Path(__file__).resolve().parent.parent / "pipelines"


def _check_range(key: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{key} = {value!r} is out of range: allowed {lo} to {hi}")


def _check_choice(key: str, value: object, choices: typing.Iterable[object]) -> None:
    allowed = list(choices)
    if value not in allowed:
        raise ConfigError(f"{key} = {value!r} is not allowed: choose one of {allowed}")


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

    def __post_init__(self) -> None:
        _check_choice("vad.aggressiveness", self.aggressiveness, range(4))
        _check_choice("vad.frame_ms", self.frame_ms, (10, 20, 30))
        _check_range("vad.preroll_ms", self.preroll_ms, 0, 2000)
        _check_range("vad.start_ms", self.start_ms, self.frame_ms, 1000)
        _check_range("vad.end_silence_ms", self.end_silence_ms, 100, 5000)
        _check_range("vad.min_speech_ms", self.min_speech_ms, 0, 5000)
        _check_range("vad.max_utterance_ms", self.max_utterance_ms, 1000, 30_000)


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

    def __post_init__(self) -> None:
        _check_choice("asr.compute_type", self.compute_type, ("int8", "int8_float32", "float32", "default"))
        _check_range("asr.beam_size", self.beam_size, 1, 10)
        _check_range("asr.cpu_threads", self.cpu_threads, 0, 64)
        _check_range("asr.no_speech_threshold", self.no_speech_threshold, 0.0, 1.0)
        _check_range("asr.min_avg_logprob", self.min_avg_logprob, -10.0, 0.0)


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
    """0 uses every core."""
    seed: int = 0

    def __post_init__(self) -> None:
        _check_range("llm.max_tokens", self.max_tokens, 1, 8192)
        _check_range("llm.temperature", self.temperature, 0.0, 2.0)
        _check_range("llm.top_p", self.top_p, 0.0, 1.0)
        _check_range("llm.n_ctx", self.n_ctx, 128, 131_072)
        _check_range("llm.n_threads", self.n_threads, 0, 256)
        if not self.system_prompt.strip():
            raise ConfigError("llm.system_prompt is empty: give the assistant a short instruction")


@dataclass(frozen=True)
class ChunkerConfig:
    """How LLM text is cut into pieces for TTS."""

    first_min_chars: int = 12
    """The first chunk may end at a clause break once it is this long."""
    min_chars: int = 40
    """Later chunks end at a clause break (comma, colon) only once this long; sentences always end a chunk."""
    max_chars: int = 220
    """A chunk longer than this is cut at the last space."""

    def __post_init__(self) -> None:
        _check_range("chunker.first_min_chars", self.first_min_chars, 1, 500)
        _check_range("chunker.min_chars", self.min_chars, 1, 1000)
        _check_range("chunker.max_chars", self.max_chars, max(self.min_chars, self.first_min_chars), 2000)


@dataclass(frozen=True)
class TtsConfig:
    """Speech synthesis (piper)."""

    voice: str = "piper-en_US-joe-medium"
    """A voice name from the manifest, or a path to a piper ``.onnx`` file (``.onnx.json`` beside it)."""
    speaker_id: int | None = None
    length_scale: float = 1.0
    """Above 1 speaks slower, below 1 faster."""

    def __post_init__(self) -> None:
        _check_range("tts.length_scale", self.length_scale, 0.3, 3.0)


@dataclass(frozen=True)
class OutputConfig:
    """Where speech goes."""

    gap_ms: int = 300
    """Silence written between two turns' replies in a file."""

    def __post_init__(self) -> None:
        _check_range("output.gap_ms", self.gap_ms, 0, 10_000)


@dataclass(frozen=True)
class QueueConfig:
    """Bounds of the queues between stages."""

    audio: int = 200
    text: int = 256

    def __post_init__(self) -> None:
        _check_range("queues.audio", self.audio, 1, 100_000)
        _check_range("queues.text", self.text, 1, 100_000)


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
    model_dir: str = ""
    """Where models are cached; empty means ``$ASSISTANT_MODEL_DIR`` or the user cache directory."""


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


def resolve_pipeline(name_or_path: str) -> Path:
    """A pipeline name (``default``) from ``pipelines/``, or a path to a TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"--pipeline {name_or_path}: no such file")
        return candidate
    path = PIPELINES_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in PIPELINES_DIR.glob("*.toml"))
        raise ConfigError(
            f"--pipeline {name_or_path}: unknown pipeline; choose one of {known} or give a .toml path"
        )
    return path


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
