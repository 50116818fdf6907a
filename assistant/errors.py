"""Errors the assistant reports, each with a stable ``code``.

The tree::

    AssistantError                 code
    ├── ConfigError                config_invalid
    ├── ModelError
    │   ├── ModelMissingError      model_missing
    │   └── ModelCorruptError      model_corrupt
    ├── AudioError                 audio_invalid
    ├── AudioDeviceError           audio_device_missing
    ├── StageError                 <stage>_failed (asr_failed, llm_failed, tts_failed, output_failed)
    │   └── StageTimeoutError      stage_timeout (the stage is in ``stage``)
    ├── InternalError              internal
    └── TooLongError               too_long

Foreign exceptions are mapped at the seam where their cause is known (``raise StageError("llm",
...) from err``). Whatever still escapes a stage while it works on a turn is caught by that stage's
error boundary (``stages.base.run_inbox``) and becomes ``internal``, with its traceback in the log.
Either way the error is that turn's: an ``error`` event, an ``outcome: error`` report line, a short
spoken apology where the turn was to be spoken; the next turn works and the daemon keeps running
(see ``docs/architecture.md``, "Errors").
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
    """A model call overran its stage's deadline on one turn and was abandoned."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(stage, message)
        self.code = "stage_timeout"


class InternalError(AssistantError):
    """Something unexpected went wrong inside a stage (a bug, or an exception no seam mapped)."""

    code = "internal"

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


class TooLongError(AssistantError):
    """An input is longer than the assistant accepts."""

    code = "too_long"
