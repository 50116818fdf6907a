"""The whole ``Config`` (one field per TOML section), built and checked from parsed TOML, loaded
from a pipeline file, and listed key by key with where each value came from."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from assistant.config.audio import AudioProcessingConfig, InputConfig, OutputConfig, VadConfig
from assistant.config.engines import AsrConfig, ChunkerConfig, LlmConfig, TtsConfig
from assistant.config.home import (
    DeviceConfig,
    IntentsConfig,
    MqttConfig,
    WyomingConfig,
    _check_devices,
    _check_state_topics,
)
from assistant.config.pipelines import resolve_pipeline
from assistant.config.turns import DeadlineConfig, LatencyConfig, ListenConfig, QueueConfig
from assistant.errors import ConfigError


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
