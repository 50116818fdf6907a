"""microWakeWord adapter (the ``pymicro-wakeword`` package: TFLite models and their runtime).

The package computes 40 spectrogram features per 10 ms and runs the model every three of them
(30 ms); the model's probabilities are averaged over its ``sliding_window_size`` (five: 150 ms),
and the word is heard when that mean passes the model's ``probability_cutoff``. So a detection
comes from about the last syllable of the word to some 250 ms after it (on espeak-ng speech);
``wake.word_end`` finds where the word ended, around it.

The package is imported lazily: without it (or where its TFLite library does not load, as on
Termux), ``wake_engine = "auto"`` falls back to the wake phrases with a warning, and
``wake_engine = "micro"`` is ``config_invalid``, with what to install.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from assistant.config import ListenConfig
from assistant.errors import ConfigError, ModelCorruptError, ModelMissingError
from assistant.messages import SAMPLE_RATE
from assistant.wake import INSTALL_HINT, SHIPPED_MODELS, Detection, WakeDetector

_LOGGER = logging.getLogger(__name__)

FEATURE_SAMPLES = SAMPLE_RATE // 100
"""Samples per feature step (10 ms)."""
REFRACTORY_S = 2.0
"""Seconds after a detection during which the detector does not fire again (the mean stays high
for a few steps, and the word is not said twice that fast)."""


class WakeUnavailable(Exception):
    """The package, or its TFLite library, cannot be loaded here."""


def _runtime() -> Any:
    try:
        import pymicro_wakeword
    except ImportError as err:  # not installed (or pymicro-features missing)
        raise WakeUnavailable(f"pymicro-wakeword is not installed ({err})") from err
    return pymicro_wakeword


class MicroWakeEngine(WakeDetector):
    """One loaded microWakeWord model, streaming."""

    def __init__(self, model: str, threshold: float = 0.0) -> None:
        """``model``: a shipped model's name, or the path of a model's ``.json`` (or ``.tflite``
        with its ``.json`` beside it); ``threshold``: 0 for the model's own. Raises
        ``WakeUnavailable`` where the runtime cannot load, ``ModelMissingError``/
        ``ModelCorruptError`` for a model file that is absent or unusable."""
        runtime = _runtime()
        config_path = self._config_path(model, runtime)
        try:
            self._model: Any = runtime.MicroWakeWord.from_config(config_path)
        except OSError as err:  # ctypes could not load libtensorflowlite_c (another libc, arch)
            raise WakeUnavailable(f"its TFLite library does not load here: {err}") from err
        except ValueError as err:
            if "tensorflowlite_c" in str(err):  # no library for this platform
                raise WakeUnavailable(str(err)) from err
            raise ModelCorruptError(f"listen.wake_model = {model}: {err}") from err
        except (KeyError, TypeError) as err:
            raise ModelCorruptError(f"listen.wake_model = {model}: {config_path} lacks {err}") from err
        self._features_class = runtime.MicroWakeWordFeatures
        self._features: Any = runtime.MicroWakeWordFeatures()
        self.name = Path(config_path).stem
        self.wake_word = str(self._model.wake_word)
        self.default_threshold = float(self._model.probability_cutoff)
        self.threshold = threshold or self.default_threshold
        self.trace: list[tuple[int, float]] | None = None
        """Set to a list to have every model step's (sample, smoothed probability) recorded."""
        self.refractory_samples = int(REFRACTORY_S * SAMPLE_RATE)
        self._steps = 0
        self._quiet_until = 0
        self.probability = 0.0
        """The latest smoothed probability."""

    @staticmethod
    def _config_path(model: str, runtime: Any) -> Path:
        if model in SHIPPED_MODELS:
            return Path(runtime.__file__).parent / "models" / f"{model}.json"
        path = Path(model).expanduser()
        if path.suffix == ".tflite":
            path = path.with_suffix(".json")
        if path.suffix != ".json":
            raise ConfigError(
                f"listen.wake_model = {model!r} is not allowed: choose one of {sorted(SHIPPED_MODELS)}"
                " or the path of a microWakeWord model's .json"
            )
        if not path.is_file():
            raise ModelMissingError(f"listen.wake_model: {path} does not exist")
        try:
            import json

            tflite = path.parent / json.loads(path.read_text(encoding="utf-8"))["model"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ModelCorruptError(f"listen.wake_model: {path} is not a microWakeWord model: {err}") from err
        try:
            with tflite.open("rb") as file:
                head = file.read(8)
        except OSError as err:
            raise ModelMissingError(
                f"listen.wake_model: {tflite} (named by {path}) cannot be read: {err}"
            ) from err
        if head[4:8] != b"TFL3":  # the runtime would crash on a file that is not a TFLite model
            raise ModelCorruptError(f"listen.wake_model: {tflite} is not a TFLite model")
        return path

    @property
    def samples(self) -> int:
        """Samples turned into features so far."""
        return self._steps * FEATURE_SAMPLES

    def process(self, pcm: bytes) -> list[Detection]:
        found: list[Detection] = []
        for features in self._features.process_streaming(pcm):
            self._steps += 1
            mean = self._model.process_streaming_prob(features)
            if mean is None or self._steps % self._model.stride:
                continue  # the model runs on every ``stride``-th feature (3: 30 ms); between, 0.0
            self.probability = float(mean)
            at = self.samples
            if self.trace is not None:
                self.trace.append((at, self.probability))
            if mean > self.threshold and at >= self._quiet_until:
                self._quiet_until = at + self.refractory_samples
                found.append(Detection(at, self.probability))
        return found

    def reset(self) -> None:
        self._model.reset()
        self._features = self._features_class()
        self._steps, self._quiet_until, self.probability = 0, 0, 0.0


def unavailable() -> str | None:
    """Why the micro engine cannot run here, or None when it can."""
    try:
        MicroWakeEngine("okay_nabu")
    except WakeUnavailable as err:
        return str(err)
    return None


def load_wake_detector(config: ListenConfig) -> WakeDetector | None:
    """The detector ``[listen]`` asks for: None unless ``mode = "wake"`` with the ``micro`` engine
    (or ``auto`` where the package loads; ``auto`` without it falls back to the wake phrases, with
    a warning). Raises ``ConfigError`` for ``micro`` without the package, ``ModelMissingError``/
    ``ModelCorruptError`` for a model file that is absent or unusable."""
    if config.mode != "wake" or config.wake_engine == "phrase":
        return None
    try:
        detector = MicroWakeEngine(config.wake_model, config.wake_threshold)
    except WakeUnavailable as err:
        if config.wake_engine == "micro":
            raise ConfigError(
                f"listen.wake_engine = 'micro' cannot run: {err}. Install it: {INSTALL_HINT};"
                " or set listen.wake_engine = 'phrase'"
            ) from err
        _LOGGER.warning(
            "wake word model unavailable (%s): wake mode listens for the wake phrases %s in the"
            " transcripts instead, so every utterance is transcribed. For a wake word model: %s",
            err,
            list(config.wake_phrases),
            INSTALL_HINT,
        )
        return None
    _LOGGER.info("wake word: %s (%s), threshold %.2f", detector.wake_word, detector.name, detector.threshold)
    return detector
