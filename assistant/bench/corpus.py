"""A spoken corpus for the benchmark: assistant questions and commands in many voices, at two
speaking rates, clean and in three kinds of noise, some with a pause in the middle.

Each take is trimmed to its speech, normalised to the same peak, given exact lead and trail
silence, and (unless clean) mixed with noise (``noise``: pink, babble, hum) at an SNR measured
over the speech. The true bounds of the speech, and of the pause in a paused utterance, are
measured from the clean samples. A noisy item also carries *beds*: the same noise, continuous
with the item's own, for the stream's gaps before and after it (``stream``: the noise runs on
through the gaps, so that it does not start a turn by itself, as a rising noise does). Items are 16 kHz mono
int16.

``bench_corpus`` makes the bench's corpus from a balanced design (``design``: not the cross
product); ``build_corpus`` makes every utterance in every voice, clean and with pink noise, for
tests and the wake word's bench. Synthesis takes a while on two cores, so a corpus is cached on
disk (``corpus/`` beside the model directory), keyed by a hash of everything that shapes it.
Heavy imports are lazy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import numpy.typing as npt

from assistant.audio.convert import float_to_pcm16, pcm16_to_float
from assistant.bench import synth
from assistant.bench.design import (
    BENCH_VOICES,
    COMMANDS,
    CONDITIONS,
    DEVICES,
    QUESTIONS,
    RATES,
    UTTERANCES,
    VOICES,
    Assignment,
    Condition,
    Utterance,
    Voice,
    assign,
)
from assistant.bench.noise import PARAMETERS as NOISE_PARAMETERS
from assistant.bench.noise import noise, pink_noise, rms, snr_gain
from assistant.bench.stream import BED_FADE_MS, StreamPosition, make_stream
from assistant.errors import AudioError
from assistant.messages import SAMPLE_RATE

__all__ = [
    "BENCH_VOICES",
    "COMMANDS",
    "CONDITIONS",
    "DEVICES",
    "QUESTIONS",
    "RATES",
    "UTTERANCES",
    "VOICES",
    "BED_FADE_MS",
    "CorpusItem",
    "StreamPosition",
    "Voice",
    "add_noise",
    "bench_corpus",
    "build_corpus",
    "make_item",
    "make_stream",
    "pink_noise",
    "rms",
    "speech_bounds",
]

CORPUS_VERSION = 5
"""Bump when the way items are made changes, so old caches are not reused."""
VARIANTS = 3
"""Takes of each utterance in the bench corpus: the default bench hears the first, ``--all`` all."""
BED_BEFORE_MS = 4500.0
"""Noise bed carried for the gap before a noisy item (the bench's gaps are 4 s: the beds of two
noisy items in a row overlap over all of it)."""
BED_AFTER_MS = 4500.0
"""Noise bed carried for the gap after a noisy item."""
_BEDS = (BED_BEFORE_MS, BED_AFTER_MS, NOISE_PARAMETERS)
MIN_PAUSE_SHARE = 0.5
"""A paused take whose longest silence is shorter than this share of the pause asked is refused
(espeak-ng counts the fading end of a word into its break: 400 ms asked may measure 290)."""


@dataclass(frozen=True)
class CorpusItem:
    """One spoken utterance, 16 kHz mono int16."""

    id: str
    """``<utterance>-<voice>[-<rate>]-<condition>``, unique in a corpus (``03-piper-slow-babble10``)."""
    text: str
    """The reference transcript (the utterance as written)."""
    voice: str
    """``Voice.name`` of the speaker."""
    snr_db: float | None
    """Speech-to-noise ratio of the added noise in dB; None for a clean item."""
    pcm: bytes
    """The audio: 16 kHz mono signed 16-bit little-endian."""
    speech_start_ms: float
    """First sample of speech (above the threshold in the clean take), ms from the item's start."""
    speech_end_ms: float
    """End of the last sample of speech, ms from the item's start: where speech truly ends."""
    lead_ms: float
    """Silence (or noise only) before the speech, in ms."""
    trail_ms: float
    """Silence (or noise only) after the speech, in ms."""
    noise: str = "clean"
    """``clean``, or the kind of noise mixed in (``noise.NOISE_KINDS``)."""
    rate: str = "normal"
    """The speaking rate (a key of ``design.RATES``)."""
    command: bool = False
    """Meant for the intents stage (answered without the LLM)."""
    variant: int = 0
    """Which take of the utterance (the default bench hears variant 0)."""
    pause_start_ms: float | None = None
    """In a paused utterance, where the pause truly starts (the first part's last sample), ms."""
    pause_end_ms: float | None = None
    """Where the pause truly ends (the second part's first sample), ms."""
    bed_before: bytes = b""
    """Noise only, at the item's noise level, continuous into the item's first sample (int16)."""
    bed_after: bytes = b""
    """Noise only, continuing from the item's last sample (int16)."""

    @property
    def duration_ms(self) -> float:
        """Length of the whole item in ms."""
        return len(self.pcm) / 2 / SAMPLE_RATE * 1000.0

    @property
    def condition(self) -> str:
        """``clean``, ``paused``, or the noise kind: the groups the bench reports apart."""
        return "paused" if self.pause_start_ms is not None else self.noise


SPEECH_THRESHOLD = 0.01
"""Amplitude (fraction of full scale, -40 dBFS) above which a sample counts as speech."""
PEAK = 0.5
"""Every take is scaled to this peak (fraction of full scale, -6 dBFS) before noise is added."""

Samples = npt.NDArray[np.float32]


def speech_bounds(samples: Samples, threshold: float = SPEECH_THRESHOLD) -> tuple[int, int]:
    """Indices ``(first, last + 1)`` of the samples whose magnitude exceeds ``threshold``; (0, 0) if none."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    if loud.size == 0:
        return 0, 0
    return int(loud[0]), int(loud[-1]) + 1


def longest_pause(samples: Samples, threshold: float = SPEECH_THRESHOLD) -> tuple[int, int]:
    """Indices ``(first quiet, first loud again)`` of the longest quiet run between the first and
    the last loud sample; (0, 0) if there is none."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    if loud.size < 2:
        return 0, 0
    gaps = np.diff(loud)
    i = int(np.argmax(gaps))
    if gaps[i] <= 1:
        return 0, 0
    return int(loud[i]) + 1, int(loud[i + 1])


def add_noise(
    samples: Samples, speech: tuple[int, int], snr_db: float, seed: int, kind: str = "pink",
    sources: Sequence[Samples] = (),
) -> Samples:  # fmt: skip
    """Noise of ``kind`` over the whole take, scaled so that speech RMS (over the ``speech``
    indices) over noise RMS is ``snr_db`` dB."""
    added = noise(kind, samples.size, seed, sources)
    gain = snr_gain(samples[speech[0] : speech[1]], added[speech[0] : speech[1]], snr_db)
    mixed: Samples = (samples + added * np.float32(gain)).astype(np.float32)
    return mixed


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("-".join(map(str, parts)).encode()).digest()[:4], "little")


def make_item(
    qid: int,
    text: str,
    voice: str,
    take: Samples,
    *,
    lead_ms: float,
    trail_ms: float,
    snr_db: float | None,
    noise_kind: str = "pink",
    sources: Sequence[Samples] = (),
    rate: str = "normal",
    command: bool = False,
    variant: int = 0,
    pause_ms: float | None = None,
    bed_ms: tuple[float, float] = (BED_BEFORE_MS, BED_AFTER_MS),
) -> CorpusItem:
    """Trim a 16 kHz float take to its speech, scale to ``PEAK``, pad with silence, optionally add
    noise of ``noise_kind`` (babble mixes ``sources``) and make its beds. With ``pause_ms`` (a
    paused utterance), the longest silence inside the speech is measured as its pause."""
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
    to_ms = 1000.0 / SAMPLE_RATE
    pause: tuple[float, float] | tuple[None, None] = (None, None)
    if pause_ms is not None:
        quiet = longest_pause(clean[start:end])
        if (quiet[1] - quiet[0]) * to_ms < MIN_PAUSE_SHARE * pause_ms:
            raise AudioError(f"corpus: voice {voice} did not pause {pause_ms:g} ms in {text!r}")
        pause = ((start + quiet[0]) * to_ms, (start + quiet[1]) * to_ms)
    suffix, bed_before, bed_after = "clean", b"", b""
    if snr_db is not None:
        before, after = (round(ms * SAMPLE_RATE / 1000) for ms in bed_ms)
        added = noise(
            noise_kind, before + clean.size + after, _seed(qid, voice, rate, variant, noise_kind), sources
        )
        mine = added[before : before + clean.size]
        added = added * np.float32(snr_gain(clean[start:end], mine[start:end], snr_db))
        pcm = float_to_pcm16(clean + added[before : before + clean.size])
        bed_before, bed_after = float_to_pcm16(added[:before]), float_to_pcm16(added[before + clean.size :])
        suffix = f"{noise_kind}{snr_db:g}"
    return CorpusItem(
        id=f"{qid:02d}-{voice}" + ("" if rate == "normal" else f"-{rate}") + f"-{suffix}",
        text=text, voice=voice, snr_db=snr_db, pcm=pcm,
        speech_start_ms=start * to_ms, speech_end_ms=end * to_ms,
        lead_ms=start * to_ms, trail_ms=(clean.size - end) * to_ms,
        noise="clean" if snr_db is None else noise_kind, rate=rate, command=command, variant=variant,
        pause_start_ms=pause[0], pause_end_ms=pause[1], bed_before=bed_before, bed_after=bed_after,
    )  # fmt: skip


def _cache_key(*inputs: object) -> str:
    blob = json.dumps([CORPUS_VERSION, *inputs], sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir(model_dir: Path) -> Path:
    """``corpus/`` beside the model directory (``~/.cache/assistant/corpus`` by default)."""
    return model_dir.parent / "corpus"


_AUDIO_FIELDS = ("pcm", "bed_before", "bed_after")


def _load(path: Path) -> list[CorpusItem] | None:
    try:
        meta = json.loads((path / "items.json").read_text(encoding="utf-8"))
        audio = np.load(path / "audio.npy")
        items = []
        for row in meta:
            for name in _AUDIO_FIELDS:
                at, to = row.pop(f"{name}_at")
                row[name] = audio[at:to].astype("<i2").tobytes()
            items.append(CorpusItem(**row))
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return items


def _save(path: Path, items: Sequence[CorpusItem]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    meta, parts, offset = [], [], 0
    for item in items:
        row = {f.name: getattr(item, f.name) for f in fields(item) if f.name not in _AUDIO_FIELDS}
        for name in _AUDIO_FIELDS:
            samples = np.frombuffer(getattr(item, name), dtype="<i2")
            row[f"{name}_at"] = [offset, offset + samples.size]
            parts.append(samples)
            offset += samples.size
        meta.append(row)
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
    Order: question, then voice, then clean before noisy; ``variant`` counts an item's place among
    its question's takes (the first voice, clean, is 0).
    """
    key = _cache_key(
        list(questions), [asdict(v) for v in voices], snr_db, lead_ms, trail_ms, tts_voice, _BEDS
    )
    path = (cache_dir or default_cache_dir(model_dir)) / key
    cached = _load(path)
    if cached is not None:
        return cached
    takes = _synthesize(
        model_dir, [((q,), v.name, 1.0, None) for q in questions for v in voices], voices, tts_voice
    )
    items: list[CorpusItem] = []
    for qid, text in enumerate(questions):
        for voice in voices:
            take = takes[((text,), voice.name, 1.0, None)]
            for snr in (None, snr_db) if snr_db is not None else (None,):
                variant = sum(item.text == text for item in items)
                items.append(make_item(qid, text, voice.name, take, lead_ms=lead_ms, trail_ms=trail_ms,
                                       snr_db=snr, variant=variant))  # fmt: skip
    _save(path, items)
    return items


def bench_corpus(
    model_dir: Path,
    *,
    utterances: Sequence[Utterance] = UTTERANCES,
    voices: Sequence[Voice] = BENCH_VOICES,
    rates: Mapping[str, float] = RATES,
    conditions: Sequence[Condition] = CONDITIONS,
    variants: int = VARIANTS,
    lead_ms: float = 300.0,
    trail_ms: float = 300.0,
    cache_dir: Path | None = None,
    tts_voice: str = "piper-en_US-joe-medium",
) -> list[CorpusItem]:
    """The bench's corpus: ``variants`` takes of every utterance, as ``design.assign`` lays them out
    (variant 0 of every utterance first, in the utterances' order). Babble is mixed from the clean
    takes of the other utterances. Cached like ``build_corpus``."""
    plan = assign(utterances, [v.name for v in voices], list(rates), conditions, variants)
    key = _cache_key([asdict(u) for u in utterances], [asdict(v) for v in voices], dict(rates),
                     [asdict(a) for a in plan], lead_ms, trail_ms, tts_voice, _BEDS)  # fmt: skip
    path = (cache_dir or default_cache_dir(model_dir)) / key
    cached = _load(path)
    if cached is not None:
        return cached

    def take_key(a: Assignment) -> synth.TakeKey:
        return (utterances[a.utterance].parts, a.voice, rates[a.rate], a.pause_ms)

    takes = _synthesize(model_dir, [take_key(a) for a in plan], voices, tts_voice)
    clean = {k: _normalised(t) for k, t in takes.items()}
    items: list[CorpusItem] = []
    for a in plan:
        utterance = utterances[a.utterance]
        sources = (
            [t for k, t in clean.items() if k[0] != utterance.parts] if a.condition.noise == "babble" else []
        )
        items.append(
            make_item(
                a.utterance, utterance.text, a.voice, takes[take_key(a)], lead_ms=lead_ms, trail_ms=trail_ms,
                snr_db=a.condition.snr_db, noise_kind=a.condition.noise, sources=sources, rate=a.rate,
                command=utterance.command, variant=a.variant, pause_ms=a.pause_ms,
            )
        )  # fmt: skip
    _save(path, items)
    return items


def _normalised(take: Samples) -> Samples:
    first, last = speech_bounds(take, SPEECH_THRESHOLD * float(np.max(np.abs(take)) or 1.0) / PEAK)
    return take[first:last].astype(np.float32)


def _synthesize(
    model_dir: Path, keys: Sequence[synth.TakeKey], voices: Sequence[Voice], tts_voice: str
) -> dict[synth.TakeKey, Samples]:
    return synth.synthesize(model_dir, keys, voices, tts_voice)
