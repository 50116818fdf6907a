"""Shared fixtures: the real default models (loaded once per session) and spoken test audio.

Tests that need the models skip when they are absent, unless ``ASSISTANT_REQUIRE_MODELS=1``
(set by ``.ci/run``), which turns a missing model into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from assistant.config import Config
from assistant.errors import ModelError

SPEECH_RATE = 16_000


def write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> Path:
    """int16 samples (frames x channels, or mono 1-D) to a WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2"), wav.getframerate()


@pytest.fixture(scope="session")
def model_dir() -> Path:
    from assistant import models

    path = models.default_model_dir()
    try:
        config = Config()
        for name, role in ((config.asr.model, "asr"), (config.llm.model, "llm"), (config.tts.voice, "tts")):
            models.resolve(name, role, path)
    except ModelError as err:
        if os.environ.get("ASSISTANT_REQUIRE_MODELS") == "1":
            pytest.fail(f"default models missing: {err.message}")
        pytest.skip(f"default models missing ({err.message})")
    return path


@pytest.fixture(scope="session")
def engines(model_dir: Path):  # type: ignore[no-untyped-def]
    from assistant.engines import load_engines

    return load_engines(Config(), model_dir)


def steady_piper(model_dir: Path) -> Callable[[str], np.ndarray]:
    """Text -> 16 kHz int16 speech in the default piper voice, without piper's random variation
    (noise scales 0): the same take in every run. With piper's noise, each test run heard its own
    take, and one take of "Stop." that tiny.en did not hear as "stop" failed every stop-word test
    of that run."""
    from piper import PiperVoice
    from piper.config import SynthesisConfig

    from assistant import models
    from assistant.audio.convert import float_to_pcm16, pcm16_to_float, resample

    voice = PiperVoice.load(models.resolve(Config().tts.voice, "tts", model_dir))
    steady = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)

    def say(text: str) -> np.ndarray:
        pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, steady))
        audio = resample(pcm16_to_float(pcm), voice.config.sample_rate)
        return np.frombuffer(float_to_pcm16(audio), dtype="<i2")

    return say


@pytest.fixture(scope="session")
def speak(model_dir: Path) -> Callable[[str], np.ndarray]:
    """Text -> 16 kHz int16 speech, in the default piper voice, the same take every run."""
    cache: dict[str, np.ndarray] = {}
    synthesize = steady_piper(model_dir)

    def say(text: str) -> np.ndarray:
        if text not in cache:
            cache[text] = synthesize(text)
        return cache[text]

    return say


@pytest.fixture(scope="session")
def espeak() -> Callable[[str, Path], np.ndarray]:
    """Text -> 16 kHz int16 speech from espeak-ng (a second, unrelated voice)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")

    def say(text: str, tmp: Path) -> np.ndarray:
        from assistant.audio.convert import read_audio_file

        out = tmp / "espeak.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(out), text], check=True)
        return np.frombuffer(read_audio_file(out), dtype="<i2")

    return say


def silence(ms: int) -> np.ndarray:
    return np.zeros(SPEECH_RATE * ms // 1000, dtype=np.int16)
