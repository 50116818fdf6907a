"""A spoken corpus for the benchmark: short assistant questions and commands in several voices,
clean and noisy.

Every question is spoken by the default piper voice and by a few espeak-ng voices (different
accents, speeds and pitches); each take is trimmed to its speech, normalised to the same peak,
given exact lead and trail silence, and also mixed with pink noise at a fixed SNR. Items are
16 kHz mono int16, with the speech start and end measured from the samples.

Synthesis takes a while on two cores, so the corpus is cached on disk (``corpus/`` beside the
model directory), keyed by a hash of everything that shapes it. Heavy imports are lazy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from assistant.audio.convert import float_to_pcm16, pcm16_to_float
from assistant.config import DeviceConfig
from assistant.errors import AudioError
from assistant.messages import SAMPLE_RATE

CORPUS_VERSION = 4
"""Bump when the way items are made changes, so old caches are not reused."""

QUESTIONS: tuple[str, ...] = (
    "What is the capital of France?",
    "What time is it?",
    "What is the weather like tomorrow?",
    "Will it rain today?",
    "What is two plus three?",
    "What is twelve times four?",
    "Turn on the kitchen lights.",
    "Turn off the living room lamp.",
    "Set a timer for ten minutes.",
    "What is the capital of Japan?",
    "Who wrote Romeo and Juliet?",
    "How far away is the moon?",
    "What does photosynthesis mean?",
    "Define the word gravity.",
    "Set the thermostat to twenty degrees.",
    "Play some music in the bedroom.",
    "How many days are in a leap year?",
    "What is the tallest mountain in the world?",
    "Remind me to call my mother tonight.",
    "What is the square root of eighty one?",
    "Lock the front door.",
    "How do you say hello in Spanish?",
    "What day is it today?",
    "Tell me a short joke.",
)
"""Questions a voice assistant commonly gets: facts, time, weather, arithmetic, definitions, home."""

COMMANDS: tuple[str, ...] = (
    "What is the current date?",
    "How much time is left on my timer?",
    "Turn on the living room lamp.",
    "Turn off the kitchen lights.",
    "Cancel the timer.",
)
"""More commands, answered by the intents stage without the LLM (as are the time, the timer and
the lights among ``QUESTIONS``): the date, a timer's status and its cancelling, the devices of
``DEVICES``. They come after the questions, so the timer they ask about is running."""

DEVICES: tuple[DeviceConfig, ...] = (
    DeviceConfig("kitchen lights", area="kitchen"),
    DeviceConfig("living room lamp", area="living room"),
)
"""The devices the corpus's commands switch: the bench declares them where its config does not."""


@dataclass(frozen=True)
class Voice:
    """One way of speaking the questions."""

    name: str
    """Short id used in item ids, e.g. ``piper`` or ``espeak-en-us``."""
    engine: str
    """``piper`` (the default voice of the pipeline) or ``espeak`` (espeak-ng)."""
    espeak_voice: str = ""
    """espeak-ng voice, with an optional variant (``en-us+f3``)."""
    speed: int = 175
    """espeak-ng words per minute."""
    pitch: int = 50
    """espeak-ng pitch, 0 to 99."""


VOICES: tuple[Voice, ...] = (
    Voice("piper", "piper"),
    Voice("espeak-en-us", "espeak", "en-us", 160, 50),
    Voice("espeak-en-gb-rp", "espeak", "en-gb-x-rp", 140, 35),
    Voice("espeak-en-f3", "espeak", "en-us+f3", 185, 70),
)


@dataclass(frozen=True)
class CorpusItem:
    """One spoken question, 16 kHz mono int16."""

    id: str
    """``<question index>-<voice>-<clean|snrNN>``, unique in a corpus."""
    text: str
    """The reference transcript (the question as written)."""
    voice: str
    """``Voice.name`` of the speaker."""
    snr_db: float | None
    """Speech-to-noise ratio of the added pink noise in dB; None for a clean item."""
    pcm: bytes
    """The audio: 16 kHz mono signed 16-bit little-endian."""
    speech_start_ms: float
    """First sample of speech (above the threshold in the clean take), ms from the item's start."""
    speech_end_ms: float
    """End of the last sample of speech, ms from the item's start."""
    lead_ms: float
    """Silence (or noise only) before the speech, in ms."""
    trail_ms: float
    """Silence (or noise only) after the speech, in ms."""

    @property
    def duration_ms(self) -> float:
        """Length of the whole item in ms."""
        return len(self.pcm) / 2 / SAMPLE_RATE * 1000.0


@dataclass(frozen=True)
class StreamPosition:
    """Where one item lies inside a stream made by ``make_stream``; all in ms from the stream's start."""

    item_id: str
    start_ms: float
    """First sample of the item (its lead silence)."""
    speech_start_ms: float
    speech_end_ms: float
    end_ms: float
    """End of the item (after its trail silence)."""


SPEECH_THRESHOLD = 0.01
"""Amplitude (fraction of full scale, -40 dBFS) above which a sample counts as speech."""
PEAK = 0.5
"""Every take is scaled to this peak (fraction of full scale, -6 dBFS) before noise is added."""


def speech_bounds(samples: npt.NDArray[np.float32], threshold: float = SPEECH_THRESHOLD) -> tuple[int, int]:
    """Indices ``(first, last + 1)`` of the samples whose magnitude exceeds ``threshold``; (0, 0) if none."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    if loud.size == 0:
        return 0, 0
    return int(loud[0]), int(loud[-1]) + 1


def pink_noise(n: int, seed: int) -> npt.NDArray[np.float32]:
    """``n`` samples of pink (1/f power) noise with unit RMS, deterministic for a ``seed``."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    noise = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    rms = float(np.sqrt(np.mean(noise**2))) or 1.0
    return (noise / rms).astype(np.float32)


def rms(samples: npt.NDArray[np.float32]) -> float:
    """Root mean square of float samples (fraction of full scale)."""
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0


def add_noise(
    samples: npt.NDArray[np.float32], speech: tuple[int, int], snr_db: float, seed: int
) -> npt.NDArray[np.float32]:
    """Pink noise over the whole take, scaled so that speech RMS (over the ``speech`` indices) over
    noise RMS is ``snr_db`` dB."""
    speech_rms = rms(samples[speech[0] : speech[1]])
    noise = pink_noise(samples.size, seed)
    noise_rms = rms(noise[speech[0] : speech[1]]) or 1.0
    gain = speech_rms / noise_rms / (10.0 ** (snr_db / 20.0))
    mixed: npt.NDArray[np.float32] = (samples + noise * np.float32(gain)).astype(np.float32)
    return mixed


def make_item(
    qid: int,
    text: str,
    voice: str,
    take: npt.NDArray[np.float32],
    *,
    lead_ms: float,
    trail_ms: float,
    snr_db: float | None,
) -> CorpusItem:
    """Trim a 16 kHz float take to its speech, scale to ``PEAK``, pad with silence, optionally add noise."""
    peak = float(np.max(np.abs(take))) if take.size else 0.0
    first, last = speech_bounds(take * (PEAK / peak)) if peak > 0 else (0, 0)
    if last <= first:
        raise AudioError(f"corpus: voice {voice} produced no audible speech for {text!r}")
    speech = (take[first:last] * (PEAK / peak)).astype(np.float32)
    lead = round(lead_ms * SAMPLE_RATE / 1000)
    trail = round(trail_ms * SAMPLE_RATE / 1000)
    pcm = float_to_pcm16(np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(trail, np.float32)]))
    clean = pcm16_to_float(pcm)  # the bounds are those of the samples as stored, not before rounding
    start, end = speech_bounds(clean)
    suffix = "clean"
    if snr_db is not None:
        seed = int.from_bytes(hashlib.sha256(f"{qid}-{voice}".encode()).digest()[:4], "little")
        pcm = float_to_pcm16(add_noise(clean, (start, end), snr_db, seed))
        suffix = f"snr{snr_db:g}"
    return CorpusItem(
        id=f"{qid:02d}-{voice}-{suffix}", text=text, voice=voice, snr_db=snr_db, pcm=pcm,
        speech_start_ms=start * 1000.0 / SAMPLE_RATE, speech_end_ms=end * 1000.0 / SAMPLE_RATE,
        lead_ms=start * 1000.0 / SAMPLE_RATE, trail_ms=(clean.size - end) * 1000.0 / SAMPLE_RATE,
    )  # fmt: skip


def _espeak(text: str, voice: Voice, tmp: Path) -> npt.NDArray[np.float32]:
    from assistant.audio.convert import pcm16_to_float, read_audio_file

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise AudioError("corpus: espeak-ng is not installed (apt-get install espeak-ng)")
    out = tmp / "take.wav"
    cmd = [
        exe,
        "-v",
        voice.espeak_voice,
        "-s",
        str(voice.speed),
        "-p",
        str(voice.pitch),
        "-w",
        str(out),
        text,
    ]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    except (subprocess.SubprocessError, OSError) as err:
        raise AudioError(f"corpus: espeak-ng failed for voice {voice.espeak_voice}: {err}") from err
    return pcm16_to_float(read_audio_file(out))


def _cache_key(questions: Sequence[str], voices: Sequence[Voice], snr_db: float | None, lead: float,
               trail: float, tts_voice: str) -> str:  # fmt: skip
    blob = json.dumps(
        [CORPUS_VERSION, list(questions), [asdict(v) for v in voices], snr_db, lead, trail, tts_voice],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir(model_dir: Path) -> Path:
    """``corpus/`` beside the model directory (``~/.cache/assistant/corpus`` by default)."""
    return model_dir.parent / "corpus"


def _load(path: Path) -> list[CorpusItem] | None:
    try:
        meta = json.loads((path / "items.json").read_text(encoding="utf-8"))
        audio = np.load(path / "audio.npy")
    except (OSError, ValueError):
        return None
    items = []
    for row in meta:
        pcm = audio[row.pop("offset") : row.pop("end")].astype("<i2").tobytes()
        items.append(CorpusItem(pcm=pcm, **row))
    return items


def _save(path: Path, items: Sequence[CorpusItem]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    meta, parts, offset = [], [], 0
    for item in items:
        samples = np.frombuffer(item.pcm, dtype="<i2")
        row = {k: v for k, v in asdict(item).items() if k != "pcm"}
        meta.append({**row, "offset": offset, "end": offset + samples.size})
        parts.append(samples)
        offset += samples.size
    np.save(tmp / "audio.npy", np.concatenate(parts) if parts else np.zeros(0, "<i2"))
    (tmp / "items.json").write_text(json.dumps(meta), encoding="utf-8")
    try:
        os.replace(tmp, path)
    except OSError:  # another process saved the same corpus first
        shutil.rmtree(tmp, ignore_errors=True)


def build_corpus(
    model_dir: Path,
    *,
    questions: Sequence[str] = QUESTIONS + COMMANDS,
    voices: Sequence[Voice] = VOICES,
    snr_db: float | None = 15.0,
    lead_ms: float = 300.0,
    trail_ms: float = 300.0,
    cache_dir: Path | None = None,
    tts_voice: str = "piper-en_US-joe-medium",
) -> list[CorpusItem]:
    """Every question in every voice, clean, and (unless ``snr_db`` is None) with pink noise at ``snr_db``.

    ``model_dir`` holds the piper voice ``tts_voice``. Items come from the cache in ``cache_dir``
    (default ``default_cache_dir(model_dir)``) when one was made with the same inputs.
    Order: question, then voice, then clean before noisy.
    """
    key = _cache_key(questions, voices, snr_db, lead_ms, trail_ms, tts_voice)
    path = (cache_dir or default_cache_dir(model_dir)) / key
    cached = _load(path)
    if cached is not None:
        return cached
    takes = _synthesize(model_dir, questions, voices, tts_voice)
    items: list[CorpusItem] = []
    for qid, text in enumerate(questions):
        for voice in voices:
            take = takes[(qid, voice.name)]
            for snr in (None, snr_db) if snr_db is not None else (None,):
                items.append(
                    make_item(qid, text, voice.name, take, lead_ms=lead_ms, trail_ms=trail_ms, snr_db=snr)
                )
    _save(path, items)
    return items


def _synthesize(
    model_dir: Path, questions: Sequence[str], voices: Sequence[Voice], tts_voice: str
) -> dict[tuple[int, str], npt.NDArray[np.float32]]:
    from assistant.audio.convert import pcm16_to_float, resample

    takes: dict[tuple[int, str], npt.NDArray[np.float32]] = {}
    if any(v.engine == "piper" for v in voices):
        from assistant import models
        from assistant.config import TtsConfig
        from assistant.engines.piper import PiperEngine

        piper = PiperEngine(models.resolve(tts_voice, "tts", model_dir), TtsConfig(voice=tts_voice))
        for qid, text in enumerate(questions):
            audio = pcm16_to_float(piper.synthesize_all(text))
            for voice in voices:
                if voice.engine == "piper":
                    takes[(qid, voice.name)] = resample(audio, piper.sample_rate)
    with tempfile.TemporaryDirectory(prefix="corpus-") as tmp:
        for voice in voices:
            if voice.engine == "espeak":
                for qid, text in enumerate(questions):
                    takes[(qid, voice.name)] = _espeak(text, voice, Path(tmp))
            elif voice.engine != "piper":
                raise AudioError(f"corpus: voice {voice.name}: unknown engine {voice.engine!r}")
    return takes


def make_stream(items: Sequence[CorpusItem], gap_ms: float = 1000.0) -> tuple[bytes, list[StreamPosition]]:
    """One 16 kHz int16 stream: the items in order with ``gap_ms`` of silence between (none after the last).

    Returns the stream and, per item, where it and its speech lie in the stream (ms).
    """
    gap = b"\x00\x00" * round(gap_ms * SAMPLE_RATE / 1000)
    parts: list[bytes] = []
    positions: list[StreamPosition] = []
    samples = 0
    for i, item in enumerate(items):
        if i:
            parts.append(gap)
            samples += len(gap) // 2
        start_ms = samples * 1000.0 / SAMPLE_RATE
        parts.append(item.pcm)
        samples += len(item.pcm) // 2
        positions.append(
            StreamPosition(
                item_id=item.id, start_ms=start_ms, speech_start_ms=start_ms + item.speech_start_ms,
                speech_end_ms=start_ms + item.speech_end_ms, end_ms=samples * 1000.0 / SAMPLE_RATE,
            )
        )  # fmt: skip
    return b"".join(parts), positions
