"""Wake words: what a wake word detector declares, the words each model listens for, the earcon.

A detector (``WakeDetector``; the one engine is ``engines.micro_wake``, microWakeWord models run
by the ``pymicro-wakeword`` package) hears every microphone frame in ``listen.mode = "wake"`` with
``listen.wake_engine = "micro"`` and says where in the stream it heard its word
(``stages.wake.WakeStage`` acts on it). Pure: no model runtime is imported here.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from assistant.config import Config, ListenConfig
from assistant.messages import SAMPLE_RATE

SHIPPED_MODELS: dict[str, tuple[str, ...]] = {
    "okay_nabu": ("okay nabu", "ok nabu"),
    "hey_jarvis": ("hey jarvis",),
    "hey_mycroft": ("hey mycroft",),
    "alexa": ("alexa",),
}
"""The models ``pymicro-wakeword`` ships, by name, with the words each listens for (as a
transcript would spell them: what ``turn.activation`` strips when the ASR heard them too)."""

INSTALL_HINT = "pip install 'assistant[wake]' (the pymicro-wakeword package)"
"""What to install for ``wake_engine = "micro"``."""


@dataclass(frozen=True, slots=True)
class Detection:
    """The detector heard its wake word."""

    at_sample: int
    """Where it was sure: samples fed since the detector started (or was reset)."""
    probability: float
    """The model's smoothed probability when it fired (0-1)."""


class WakeDetector(ABC):
    """A streaming wake word detector: 16 kHz mono int16 in, detections out. Synchronous; cheap
    enough (a few ms per second of audio) to run on the event loop, piece by piece."""

    name: str = ""
    """The model's name (``okay_nabu``, or the file's stem)."""
    wake_word: str = ""
    """The wake word as written (``Okay Nabu``)."""
    default_threshold: float = 0.5
    """The model's own threshold."""
    threshold: float = 0.5
    """The probability above which the word is heard (``listen.wake_threshold``, else the model's)."""

    @abstractmethod
    def process(self, pcm: bytes) -> list[Detection]:
        """Feed a piece of audio (any whole number of samples); the detections it completed."""

    @abstractmethod
    def reset(self) -> None:
        """Forget what was heard; the sample count starts again at 0."""


def model_words(model: str) -> tuple[str, ...]:
    """The words a wake model listens for: a shipped model's, or the ``wake_word`` of a model's
    JSON file (empty when it cannot be read)."""
    if model in SHIPPED_MODELS:
        return SHIPPED_MODELS[model]
    path = Path(model).expanduser()
    if path.suffix == ".tflite":
        path = path.with_suffix(".json")
    try:
        word = json.loads(path.read_text(encoding="utf-8")).get("wake_word", "")
    except (OSError, ValueError, AttributeError):
        return ()
    return (word.lower(),) if isinstance(word, str) and word.strip() else ()


def running(config: Config, detector: bool) -> Config:
    """``config`` with ``listen.wake_engine`` as it runs: ``micro`` where a detector was loaded,
    else ``phrase`` (``auto`` without the package, or wake mode chosen after start: the model is
    loaded at start only)."""
    engine = "micro" if detector and config.listen.wake_engine != "phrase" else "phrase"
    return replace(config, listen=replace(config.listen, wake_engine=engine))


def wake_words(config: ListenConfig) -> tuple[str, ...]:
    """What a transcript may begin with that is the wake word, not the question: the model's
    words with the ``micro`` engine, else the wake phrases."""
    return model_words(config.wake_model) if config.wake_engine == "micro" else config.wake_phrases


GAP_SEARCH_MS = (350, 80)
"""Where ``word_gap`` looks for the end of the wake word: from this long before the detection to
this long before it, in ms."""
GAP_WINDOW_MS = 20
"""Length of the stretches ``word_gap`` compares, in ms."""


GAP_QUIET_DB = 10.0
"""A stretch counts as quiet within this many dB of the quietest one."""


def word_gap(pcm: bytes, rate: int = SAMPLE_RATE) -> int:
    """Where the wake word ended, in a stretch of audio that ends where the detector fired (int16
    mono): the start of the latest quiet ``GAP_WINDOW_MS`` (within ``GAP_QUIET_DB`` of the quietest)
    between ``GAP_SEARCH_MS`` before the end, in samples from the stretch's start.

    The detector fires from the word's last syllable to a quarter of a second after the word;
    the pause after it, or the dip between it and the next word when the user does not pause, is
    the last quiet moment there (the quietest may be the closure of the "b" in "nabu", which
    leaves "bu" to be heard as "Blue."). Whisper heard the question right from there in 21 of 24
    piper takes of four "okay nabu ..." sentences (piper varies from take to take), against 12 from
    the quietest moment; on espeak-ng (nine voices, five sentences) both gave 27 of 45, the rest
    mostly Whisper mishearing espeak-ng wherever it starts."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    window, step = rate * GAP_WINDOW_MS // 1000, rate // 200
    first = max(0, samples.size - rate * GAP_SEARCH_MS[0] // 1000)
    last = samples.size - rate * GAP_SEARCH_MS[1] // 1000 - window
    if last <= first:
        return max(0, samples.size - rate * GAP_SEARCH_MS[1] // 1000)
    energy = np.convolve(samples**2, np.ones(window), mode="valid")
    starts = np.arange(first, last + 1, step)
    quiet = energy[starts] <= energy[starts].min() * 10 ** (GAP_QUIET_DB / 10) + window
    return int(starts[np.flatnonzero(quiet)[-1]])


GAP_AFTER_MS = 150
"""How far past the detection ``word_end`` looks for the pause after the word, in ms."""
PAUSE_MS = 100
"""A quiet stretch this long (ms) that begins after the detection is the pause after the word."""


def word_end(pcm: bytes, at: int, rate: int = SAMPLE_RATE) -> int:
    """Where the wake word ended, in a stretch of audio (int16 mono) from ``GAP_SEARCH_MS[0]``
    before the detection (at sample ``at`` of the stretch) to up to ``GAP_AFTER_MS`` after it.

    The detector can be sure before the word has ended: on some piper takes it fired during the
    decay of "bu", with the pause after the word still to come, and the quietest moment before
    the detection was then the closure of the "b", which left "bu" to be heard as "Move.". So a
    pause (``PAUSE_MS`` of quiet, within ``GAP_QUIET_DB`` of the quietest stretch here) that
    begins between ``GAP_SEARCH_MS[1]`` before the detection and the end of the stretch is where
    the word ended; without one, ``word_gap`` on the audio before the detection. Shorter pauses
    are not taken: in "what time" the closure of the "t" is a 40-55 ms pause (piper), and the
    question would lose its first word. On 105 takes (piper and five espeak-ng voices, five
    sentences with and without a pause after the word) this heard the question right where
    ``word_gap`` alone did, and also in the one take of 16 with the early detection."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    window, step = rate * GAP_WINDOW_MS // 1000, rate // 200
    first = max(0, at - rate * GAP_SEARCH_MS[1] // 1000)
    before = max(0, at - rate * GAP_SEARCH_MS[0] // 1000)
    gap = before + word_gap(pcm[2 * before : 2 * at], rate)
    if samples.size - window <= first:
        return gap
    energy = np.convolve(samples**2, np.ones(window), mode="valid")
    starts = np.arange(before, energy.size, step)
    quiet = energy[starts] <= energy[starts].min() * 10 ** (GAP_QUIET_DB / 10) + window
    need = max(1, (rate * PAUSE_MS // 1000 - window) // step + 1)
    for index in np.flatnonzero(starts >= first):
        if index + need <= starts.size and quiet[index : index + need].all():
            return int(starts[index])
    return gap


EARCON_MS = 150
"""Length of the tone played on a detection (``listen.wake_earcon``), in ms."""


def earcon(rate: int, level: float = 0.25) -> bytes:
    """A short rising two-note chime (E6 then A6, 75 ms each, faded in and out), int16 mono."""
    n = rate * EARCON_MS // 2000
    t = np.arange(n) / rate
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (rate * 0.008))
    notes = [np.sin(2 * math.pi * hz * t) * fade for hz in (1318.5, 1760.0)]
    return (np.concatenate(notes) * level * 32767).astype("<i2").tobytes()
