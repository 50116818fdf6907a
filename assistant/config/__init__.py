"""Configuration: frozen dataclasses checked in ``__post_init__``, loaded from TOML.

Config objects never see argparse. Every validation error names the key (``vad.aggressiveness``)
and the allowed values, so a user can fix the file without reading code.

The sections live by meaning: ``audio`` (``[input]``, ``[vad]``, ``[output]``,
``[audio_processing]``), ``engines`` (``[asr]``, ``[llm]``, ``[chunker]``, ``[tts]``), ``turns``
(``[latency]``, ``[deadlines]``, ``[listen]``, ``[queues]``), ``home`` (``[mqtt]``, ``[wyoming]``,
``[[devices]]``, ``[intents]``); ``loading`` holds the whole ``Config`` and how it is read,
``pipelines`` where pipeline files are found, ``checks`` the range and choice checks. Every public
name is importable from here.
"""

from assistant.config.audio import NOISE_LEVELS, AudioProcessingConfig, InputConfig, OutputConfig, VadConfig
from assistant.config.checks import tcp_address
from assistant.config.engines import DEFAULT_HISTORY_TOKENS, AsrConfig, ChunkerConfig, LlmConfig, TtsConfig
from assistant.config.home import DEVICE_DOMAINS, DeviceConfig, IntentsConfig, MqttConfig, WyomingConfig
from assistant.config.loading import Config, config_from_dict, config_sources, load_config
from assistant.config.pipelines import (
    PIPELINES_DIR,
    PipelineFile,
    find_pipelines,
    pipeline_file,
    pipeline_listing,
    resolve_pipeline,
    user_pipelines_dir,
)
from assistant.config.turns import DeadlineConfig, LatencyConfig, ListenConfig, QueueConfig
from assistant.errors import ConfigError

__all__ = [
    "DEFAULT_HISTORY_TOKENS",
    "DEVICE_DOMAINS",
    "NOISE_LEVELS",
    "PIPELINES_DIR",
    "AsrConfig",
    "AudioProcessingConfig",
    "ChunkerConfig",
    "Config",
    "ConfigError",
    "DeadlineConfig",
    "DeviceConfig",
    "InputConfig",
    "IntentsConfig",
    "LatencyConfig",
    "ListenConfig",
    "LlmConfig",
    "MqttConfig",
    "OutputConfig",
    "PipelineFile",
    "QueueConfig",
    "TtsConfig",
    "VadConfig",
    "WyomingConfig",
    "config_from_dict",
    "config_sources",
    "find_pipelines",
    "load_config",
    "pipeline_file",
    "pipeline_listing",
    "resolve_pipeline",
    "tcp_address",
    "user_pipelines_dir",
]
