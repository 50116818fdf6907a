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
import math
from collections import deque
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
WARM_UP_S = 6.0
"""Seconds of far end (white noise, about -20 dBFS) the canceller hears, over a quiet near end,
when it is made (see ``Processor.warm_up``)."""


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

    def __init__(self, features: Features, module: ModuleType | None = None, *, warm: bool = True) -> None:
        """``module``: pywebrtc_audio (default: imported here; ``ProcessingUnavailable`` if it cannot be);
        ``warm``: with echo cancellation, ``warm_up`` (False: AEC3 as the library starts it)."""
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
        if features.echo and warm:
            self.warm_up()

    def warm_up(self, seconds: float = WARM_UP_S) -> None:
        """Play ``seconds`` of white noise as the far end into a quiet near end (no echo at all).

        A fresh AEC3 knows no echo path, so it takes the echo to be as loud as the far end until
        its adaptive filter has converged on one; where the microphone hears little or none of
        the speaker, the filter never converges, and AEC3 suppresses the near end as if it were
        echo until it concludes there is no echo (its "transparent mode"), after about 7 s of
        far. Measured here (offline, a piper "Stop." over a piper reply with no echo): the
        user's 10 ms frames kept within 6 dB of their level were 7-77 % (mean 34 %) when the
        word began 0.5 to 7 s into the first far end, 87-90 % from 8 s on, and 80-90 % from the
        start after this warm-up. The cost: where the speaker is loud in the microphone, the
        first half second of its first echo is taken off by 2 dB instead of 20-34 (AEC3 leaves
        the mode as soon as its filter converges; from then on it cancels 5-7 dB more than a
        fresh one did); the energy echo gate, which judges the raw microphone, is the line
        there. About 0.12 s of CPU, once."""
        rng = np.random.default_rng(0)
        count = int(seconds * SAMPLE_RATE) // FRAME * FRAME
        far = np.clip(rng.standard_normal(count) * 3000, -32768, 32767).astype(np.int16)
        near = np.clip(rng.standard_normal(count) * 10, -32768, 32767).astype(np.int16)
        step = FRAME * 10
        for at in range(0, count, step):
            self._ap.process(near[at : at + step], far[at : at + step])

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
        """Start over (filters, noise estimate, gain) with the same settings (warmed up again)."""
        self._ap.reset()
        if self.features.echo:
            self.warm_up()


class Coupling:
    """How loud the far end comes back into the microphone, to tell whether there is echo to cancel.

    Over windows of ``window_ms`` where the far end is on (above ``FAR_ON``), the microphone's
    power against the far end's, in dB; the echo path's coupling is a low percentile of the last
    ``keep`` windows (the windows where the user was quiet: their speech only raises the ratio).
    ``echo`` is True until ``min_windows`` windows were measured (a fresh canceller assumes echo),
    then while the coupling is above ``threshold_db``."""

    FAR_ON = 300.0
    """RMS (int16) above which a window's far end counts as playing (about -40 dBFS)."""

    def __init__(
        self, threshold_db: float = -35.0, window_ms: int = 200, keep: int = 50, min_windows: int = 5
    ) -> None:
        self.threshold_db = threshold_db
        self.window = SAMPLE_RATE * window_ms // 1000
        self.min_windows = min_windows
        self.ratios: deque[float] = deque(maxlen=keep)
        self._near = 0.0
        self._far = 0.0
        self._count = 0

    def add(self, near: npt.NDArray[np.int16], far: npt.NDArray[np.int16]) -> None:
        """``near`` (the microphone as captured) and ``far`` over the same samples."""
        self._near += float(np.sum(near.astype(np.float64) ** 2))
        self._far += float(np.sum(far.astype(np.float64) ** 2))
        self._count += len(near)
        if self._count < self.window:
            return
        if self._far / self._count > self.FAR_ON**2:
            self.ratios.append(10 * math.log10((self._near + 1.0) / self._far))
        self._near = self._far = 0.0
        self._count = 0

    @property
    def coupling_db(self) -> float | None:
        """The echo path's estimated coupling in dB (None: too little far end heard yet)."""
        if len(self.ratios) < self.min_windows:
            return None
        return float(np.percentile(np.array(self.ratios), 10))

    @property
    def echo(self) -> bool:
        """Whether the microphone hears the far end enough for its echo to matter."""
        coupling = self.coupling_db
        return coupling is None or coupling > self.threshold_db


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
