"""Errors the assistant reports, each with a stable ``code``.

The tree::

    AssistantError                 code
    ├── ConfigError                config_invalid
    ├── ModelError
    │   ├── ModelMissingError      model_missing
    │   └── ModelCorruptError      model_corrupt
    ├── AudioError                 audio_invalid
    ├── AudioDeviceError           audio_device_missing
    ├── StageError                 <stage>_failed (asr_failed, llm_failed, tts_failed)
    │   └── StageTimeoutError      <stage>_timeout
    └── TooLongError               too_long

Foreign exceptions are mapped at the seam (``raise ModelCorruptError(...) from err``);
an error becomes an event and a log line, and the daemon keeps running.
"""

from __future__ import annotations


class AssistantError(Exception):
    """Base of every error the assistant reports. ``code`` is stable and documented."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class ConfigError(AssistantError):
    """A configuration value is wrong; the message names the key and what is allowed."""

    code = "config_invalid"


class ModelError(AssistantError):
    """A model file cannot be used."""

    code = "model_error"


class ModelMissingError(ModelError):
    """A model file is not where it should be."""

    code = "model_missing"


class ModelCorruptError(ModelError):
    """A model file is there but is not a usable model (truncated, wrong format, bad checksum)."""

    code = "model_corrupt"


class AudioError(AssistantError):
    """Input audio cannot be read or converted."""

    code = "audio_invalid"


class AudioDeviceError(AssistantError):
    """An audio device or its backend (PortAudio, PulseAudio tools) is missing or failed."""

    code = "audio_device_missing"


class StageError(AssistantError):
    """A pipeline stage failed on one turn; the next turn still runs."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message, code=f"{stage}_failed")
        self.stage = stage


class StageTimeoutError(StageError):
    """A pipeline stage took longer than its timeout on one turn."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(stage, message)
        self.code = f"{stage}_timeout"


class TooLongError(AssistantError):
    """An input is longer than the assistant accepts."""

    code = "too_long"
