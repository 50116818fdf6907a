"""WebRTC's audio processing module on the microphone: echo cancellation, noise suppression, gain.

``pywebrtc-audio`` (the ``aec`` extra) binds WebRTC's APM: AEC3 removes the far end (what the
speaker played: ``reference.PlayedAudio``) from the near end (the microphone), then the noise
suppressor and AGC2's adaptive digital gain run, on 10 ms frames of 16 kHz mono int16 (with
echo cancellation a high-pass filter runs first, as in Chrome). ``Processor`` wraps one instance
for one stream; it is not thread-safe (the stage calls it from the event loop: about 0.7 ms of CPU per
20 ms piece here).

The library is imported lazily. Where it does not install (Termux has no wheel) ``load`` logs
one warning naming the extra and what is lost, and returns None: the daemon hears the raw
microphone, with the energy echo gate (``endpointing/echo.py``) alone against its own voice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from assistant.config import AudioProcessingConfig
from assistant.messages import SAMPLE_RATE

_LOGGER = logging.getLogger(__name__)

FRAME = SAMPLE_RATE // 100
"""Samples in one 10 ms frame: the APM's unit."""
NS_LEVEL = {"low": 0, "moderate": 1, "high": 2, "very_high": 3}
"""``audio_processing.noise_suppression`` -> WebRTC's level (6, 12, 18, 21 dB)."""
INSTALL_HINT = "pip install 'assistant[aec]' (pywebrtc-audio)"


class ProcessingUnavailable(Exception):  # noqa: N818 - a reason, shown as such
    """pywebrtc-audio cannot be imported here; the message says why."""


def webrtc() -> ModuleType:
    """The ``pywebrtc_audio`` module, or ``ProcessingUnavailable`` with the reason."""
    try:
        import pywebrtc_audio
    except (ImportError, OSError) as err:
        raise ProcessingUnavailable(f"pywebrtc-audio cannot be imported ({err})") from err
    module: ModuleType = pywebrtc_audio
    return module


def features(config: AudioProcessingConfig, *, echo: bool = True) -> list[str]:
    """What ``config`` turns on, in words (``echo``: a far end is there to cancel)."""
    names = []
    if config.echo_cancellation and echo:
        names.append("echo cancellation")
    if config.noise_suppression != "off":
        names.append(f"noise suppression ({config.noise_suppression})")
    if config.gain_control:
        names.append("gain control")
    return names


@dataclass(frozen=True)
class Features:
    """What one ``Processor`` does."""

    echo: bool
    noise: str
    """A level of ``NS_LEVEL``, or ``off``."""
    gain: bool
    max_gain_db: float = 30.0
    delay_ms: int = 40
    """The hint AEC3 starts its delay estimate from, in ms."""

    @classmethod
    def of(cls, config: AudioProcessingConfig, *, echo: bool) -> Features:
        """What ``config`` asks for (``echo``: where a live speaker gives the far end)."""
        return cls(
            echo=config.echo_cancellation and echo,
            noise=config.noise_suppression,
            gain=config.gain_control,
            max_gain_db=config.max_gain_db,
            delay_ms=config.reference_margin_ms,
        )


class Processor:
    """One stream through WebRTC's APM: ``process(near, far)`` on whole 10 ms frames."""

    def __init__(self, features: Features, module: ModuleType | None = None) -> None:
        """``module``: pywebrtc_audio (default: imported here; ``ProcessingUnavailable`` if it cannot be)."""
        self.features = features
        api = module or webrtc()
        self._ap: Any = api.AudioProcessor(
            sample_rate=SAMPLE_RATE,
            echo_cancellation=features.echo,
            noise_suppression=features.noise != "off",
            ns_level=NS_LEVEL.get(features.noise, 1),
            auto_gain_control=features.gain,
            agc_max_gain_db=features.max_gain_db,
            stream_delay_ms=features.delay_ms if features.echo else 0,
        )
        self.frames = 0
        """10 ms frames processed."""

    @property
    def speech_probability(self) -> float:
        """WebRTC's speech probability (0-1) of the last frame."""
        return float(self._ap.speech_probability)

    @property
    def gain_db(self) -> float:
        """AGC2's gain of the last frame, in dB (0 without gain control)."""
        return float(self._ap.gain_db) if self.features.gain else 0.0

    def process(
        self, near: npt.NDArray[np.int16], far: npt.NDArray[np.int16] | None = None
    ) -> npt.NDArray[np.int16]:
        """``near`` (the microphone) processed; ``far``: what was heard over the same frames
        (as long as ``near``; None or ignored without echo cancellation). Both a whole number of
        10 ms frames: the library pads a partial one with zeros, which would corrupt the stream."""
        if len(near) % FRAME:
            raise ValueError(f"{len(near)} samples is not a whole number of 10 ms frames")
        if not self.features.echo:
            far = None
        elif far is None or len(far) != len(near):
            raise ValueError("the far end must be as long as the near end")
        self.frames += len(near) // FRAME
        out = self._ap.process(np.ascontiguousarray(near, dtype=np.int16), far)
        return np.asarray(out, dtype=np.int16)

    def reset(self) -> None:
        """Start over (filters, noise estimate, gain) with the same settings."""
        self._ap.reset()


def load(config: AudioProcessingConfig, *, echo: bool) -> Processor | None:
    """A ``Processor`` for ``config`` (``echo``: a live speaker gives the far end), or None when
    nothing is on, or, with one logged warning, when pywebrtc-audio cannot be imported."""
    wanted = Features.of(config, echo=echo)
    if not (wanted.echo or wanted.noise != "off" or wanted.gain):
        return None
    try:
        return Processor(wanted)
    except ProcessingUnavailable as err:
        lost = ", ".join(features(config, echo=echo))
        _LOGGER.warning("%s: no %s on the microphone; %s", err, lost, INSTALL_HINT)
        return None
