"""``assistant bench --wake``: how well the wake word model hears "okay nabu", how often it hears it
where nobody said it, and what listening for it costs against transcribing everything.

- **Misses**: every corpus question and command after "Okay nabu," (``QUESTIONS + COMMANDS``) in
  piper's voice and ten espeak-ng voices, each voice's takes in one stream with a second between
  (the detector runs on, as it would on a microphone): clean, and with steady pink noise over the
  whole stream at 15 dB and at 5 dB below the speech; and the noisy streams again through WebRTC's
  noise suppression (``SUPPRESSION``, as ``audio_processing.noise_suppression`` puts it before the
  wake word; skipped where pywebrtc-audio does not load). A take is missed when no detection
  falls inside it (or within 300 ms after it).
- **The question after it**: from where the wake stage would start the question
  (``wake.word_end``) to the take's end, transcribed by Whisper, against the same question said
  alone in the same voice (word error rate, and takes heard word for word).
- **False wakes**: sentences without the wake word (the corpus's questions, and plain English
  prose: the sentences of Python's own help topics) in the same voices, at least an hour of speech,
  clean and with pink noise at 10 dB SNR (also suppressed); a few near misses ("Okay, now...",
  "Okay, no...") apart;
  and ten minutes of music-like audio (random chords of harmonic tones). Reported per hour.
- **CPU per hour of listening**: the detector's process time on all of the above, against
  always-on listening on the false-wake speech: the VAD on every frame and Whisper on every
  utterance it sends on (at each pause, as the live pipeline speculates, and at each endpoint
  not speculated on). The LLM and the voice, which answer what always-on listening admits, are
  not counted.

The corpus is synthesized once and cached (``bench.corpus``). Heavy imports are lazy.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assistant.bench.corpus import (
    COMMANDS,
    QUESTIONS,
    CorpusItem,
    Voice,
    build_corpus,
    make_stream,
)
from assistant.messages import SAMPLE_RATE

VOICES: tuple[Voice, ...] = (
    Voice("piper", "piper"),
    Voice("espeak-en-us", "espeak", "en-us", 160, 50),
    Voice("espeak-en-gb", "espeak", "en-gb", 150, 50),
    Voice("espeak-en-gb-scotland", "espeak", "en-gb-scotland", 150, 45),
    Voice("espeak-en-gb-x-rp", "espeak", "en-gb-x-rp", 140, 35),
    Voice("espeak-en-029", "espeak", "en-029", 165, 50),
    Voice("espeak-en-us+m3", "espeak", "en-us+m3", 170, 55),
    Voice("espeak-en-us+m4", "espeak", "en-us+m4", 155, 45),
    Voice("espeak-en-gb-x-gbclan", "espeak", "en-gb-x-gbclan", 160, 50),
    Voice("espeak-en-us+f2", "espeak", "en-us+f2", 160, 60),
    Voice("espeak-en-us+f3", "espeak", "en-us+f3", 175, 70),
)
"""The default piper voice and ten espeak-ng voices: accents, speeds and pitches, two female."""
WAKE = "Okay nabu, "
NEAR = (
    "Okay, now what time is it?",
    "Okay, no, not that one.",
    "OK, now turn it off.",
    "Oh okay, maybe tomorrow.",
    "Hey, can you nab the book?",
    "I said okay, and then nothing.",
)
"""Sentences that sound somewhat like the wake word, reported apart from the rest."""
SNRS = (15.0, 5.0)
"""Noise levels of the miss test, dB SNR."""
SUPPRESSION = "very_high"
"""The noise suppression the noisy streams are also heard through: the level Whisper does best
after on the noisy corpus (README: Echo cancellation, noise suppression and gain)."""
FALSE_SNR = 10.0
"""Noise level of the noisy false-wake pass, dB SNR."""
MUSIC_S = 600
"""Seconds of music-like audio."""
THRESHOLDS = (0.7, 0.5)
"""``listen.wake_threshold`` values measured besides the model's own."""


def prose(limit: int | None = None) -> list[str]:
    """Plain English sentences of 6-20 words from Python's help topics (no code), in a fixed order."""
    from pydoc_data.topics import topics

    found = set()
    for sentence in re.split(r"(?<=[.!?])\s+", " ".join(topics.values())):
        sentence = " ".join(sentence.split())
        if re.fullmatch(r"[A-Za-z][A-Za-z ,']*[a-z][.!?]", sentence) and 6 <= len(sentence.split()) <= 20:
            found.add(sentence)
    ordered = sorted(found, key=lambda s: (hash_key(s), s))
    return ordered[:limit] if limit is not None else ordered


def hash_key(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def detect(detector: Any, pcm: bytes, piece_ms: int = 20) -> tuple[list[int], float, list[tuple[int, float]]]:
    """Feed ``pcm`` in microphone-sized pieces; (detection sample positions, CPU seconds, every
    model step's (sample, smoothed probability))."""
    detector.reset()
    detector.trace = []
    size = 2 * SAMPLE_RATE * piece_ms // 1000
    found: list[int] = []
    started = time.process_time()
    for i in range(0, len(pcm), size):
        found += [d.at_sample for d in detector.process(pcm[i : i + size])]
    cpu = time.process_time() - started
    trace, detector.trace = detector.trace, None
    return found, cpu, trace


def fired(trace: Sequence[tuple[int, float]], threshold: float, refractory: int) -> list[int]:
    """Where a detector with ``threshold`` would have fired on ``trace`` (as ``MicroWakeEngine``)."""
    found: list[int] = []
    for at, probability in trace:
        if probability > threshold and (not found or at >= found[-1] + refractory):
            found.append(at)
    return found


def music(seconds: int, seed: int = 7) -> bytes:
    """Music-like audio: random chords of harmonic tones, a new one every 250-750 ms, with a
    decay, at about -18 dBFS."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    total = 0
    while total < seconds * SAMPLE_RATE:
        n = int(rng.uniform(0.25, 0.75) * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        chord = np.zeros(n)
        for midi in rng.choice(np.arange(45, 80), size=3, replace=False):
            hz = 440.0 * 2 ** ((midi - 69) / 12)
            chord += sum(np.sin(2 * np.pi * hz * k * t) / k**1.5 for k in range(1, 6))
        out.append(chord * np.exp(-t * rng.uniform(2, 6)))
        total += n
    audio = np.concatenate(out)[: seconds * SAMPLE_RATE]
    audio *= 0.125 / max(1e-9, float(np.sqrt(np.mean(audio**2))))
    pcm: bytes = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    return pcm


def suppressed(pcm: bytes, level: str = SUPPRESSION) -> bytes | None:
    """``pcm`` through WebRTC's noise suppression at ``level`` (a whole number of 10 ms frames of
    it); None where pywebrtc-audio does not load."""
    from assistant.audio.processing import FRAME, Features, ProcessingUnavailable, Processor

    try:
        processor = Processor(Features(echo=False, noise=level, gain=False))
    except ProcessingUnavailable:
        return None
    samples = np.frombuffer(pcm, dtype="<i2")
    return processor.process(samples[: samples.size // FRAME * FRAME]).tobytes()


def _misses(
    detector: Any, items: Sequence[CorpusItem], snr_db: float | None, suppress: bool = False
) -> tuple[int, int, float, float, list[bytes | None], dict[float, int]]:
    """(misses, extra detections, audio seconds, CPU seconds, per take the audio the VAD would get
    after the wake word: from ``word_end``'s cut to the take's end, None where missed) over one
    stream of ``items``, with steady pink noise at ``snr_db`` over all of it (a room's noise does
    not stop between words), through noise suppression if ``suppress``."""
    from assistant.wake import GAP_AFTER_MS, GAP_SEARCH_MS, word_end

    stream, positions = make_stream(items, gap_ms=1000.0)
    if snr_db is not None:
        stream = _noisy_stream(stream, snr_db)
    if suppress:
        stream = suppressed(stream) or stream
    found, cpu, trace = detect(detector, stream)
    lower = {t: fired(trace, t, detector.refractory_samples) for t in THRESHOLDS}
    misses_at = dict.fromkeys(THRESHOLDS, 0)
    misses = extra = 0
    after: list[bytes | None] = []
    for pos in positions:
        span = (pos.start_ms * 16, (pos.end_ms + 300) * 16)
        for threshold, hits in lower.items():
            misses_at[threshold] += not any(span[0] <= at <= span[1] for at in hits)
        inside = [at for at in found if pos.start_ms * 16 <= at <= (pos.end_ms + 300) * 16]
        misses += not inside
        extra += max(0, len(inside) - 1)
        if not inside:
            after.append(None)
            continue
        search = max(0, inside[0] - SAMPLE_RATE * GAP_SEARCH_MS[0] // 1000)
        ahead = inside[0] + SAMPLE_RATE * GAP_AFTER_MS // 1000
        cut = search + word_end(stream[2 * search : 2 * ahead], inside[0] - search)
        after.append(bytes(9600) + stream[2 * cut : 2 * round(pos.end_ms * 16)])
    return misses, extra, len(stream) / 2 / SAMPLE_RATE, cpu, after, misses_at


def run_wake_bench(
    model_dir: Path,
    *,
    voices: Sequence[Voice] = VOICES,
    limit: int | None = None,
    cache_dir: Path | None = None,
    asr_minutes: float = 10.0,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Misses, false wakes per hour and CPU per hour of listening (see the module docstring).
    ``limit``: only so many questions and prose sentences per voice (a quick look)."""
    from assistant import models
    from assistant.config import AsrConfig
    from assistant.engines.micro_wake import MicroWakeEngine
    from assistant.engines.whisper import WhisperEngine

    detector = MicroWakeEngine("okay_nabu")
    asr = WhisperEngine(models.resolve(AsrConfig().model, "asr", model_dir), AsrConfig())
    questions = list(QUESTIONS + COMMANDS)[:limit]
    wake_questions = [WAKE + q[0].lower() + q[1:] for q in questions]
    result: dict[str, Any] = {
        "model": detector.name,
        "threshold": detector.threshold,
        "suppression": SUPPRESSION,
        "voices": {},
        "heard": {},
    }
    cpu_s = audio_s = 0.0
    log(f"wake bench: {len(wake_questions)} questions after the wake word, {len(voices)} voices")
    suppress = suppressed(bytes(320)) is not None
    if not suppress:
        result["suppression"] = None
        log("  pywebrtc-audio does not load here: no figures through noise suppression")
    conditions = [(None, False)] + [(snr, False) for snr in SNRS] + [(snr, True) for snr in SNRS if suppress]
    for voice in voices:
        clean = build_corpus(
            model_dir, questions=wake_questions, voices=[voice], snr_db=None, cache_dir=cache_dir
        )
        row: dict[str, Any] = {}
        for snr, quieter in conditions:
            label = "clean" if snr is None else f"snr{snr:g}" + (" ns" if quieter else "")
            misses, extra, seconds, cpu, after, misses_at = _misses(detector, clean, snr, quieter)
            row[label] = {"takes": len(clean), "misses": misses, "extra": extra}
            row[label] |= {f"misses_{t:g}": n for t, n in misses_at.items()}
            cpu_s, audio_s = cpu_s + cpu, audio_s + seconds
            if snr is None:
                alone = build_corpus(
                    model_dir, questions=questions, voices=[voice], snr_db=None, cache_dir=cache_dir
                )
                result["heard"][voice.name] = _heard(asr, questions, after, alone)
        result["voices"][voice.name] = row
        heard = result["heard"][voice.name]
        log(
            f"  {voice.name}: " + ", ".join(f"{k} {v['misses']}/{v['takes']} missed" for k, v in row.items())
            + f"; WER after the wake word {heard['wer_after_wake']:.1%}, alone {heard['wer_alone']:.1%}"
        )  # fmt: skip
    result["misses"] = _totals(result["voices"])
    result["heard"]["all"] = _heard_totals(result["heard"])

    sentences = prose(limit if limit is None else limit * 3)
    noisy = f"speech snr{FALSE_SNR:g}"
    counts = {"speech clean": [0, 0.0], noisy: [0, 0.0]} | ({f"{noisy} ns": [0, 0.0]} if suppress else {})
    counts["music"] = [0, 0.0]
    sample: list[bytes] = []  # the speech the always-on CPU is measured on
    lower = {(label, t): 0 for label in counts for t in THRESHOLDS}
    for index, voice in enumerate(voices):
        mine = [s for i, s in enumerate(sentences) if i % 3 == index % 3] + list(QUESTIONS + COMMANDS)[:limit]
        items = build_corpus(model_dir, questions=mine, voices=[voice], snr_db=None, cache_dir=cache_dir)
        stream = make_stream(items, gap_ms=500.0)[0]
        if sum(map(len, sample)) < asr_minutes * 60 * 2 * SAMPLE_RATE:
            sample.append(stream)
        takes = [("speech clean", stream), (noisy, _noisy_stream(stream, FALSE_SNR))]
        if suppress:
            takes.append((f"{noisy} ns", suppressed(takes[1][1]) or takes[1][1]))
        for label, audio in takes:
            found, cpu, trace = detect(detector, audio)
            counts[label][0] += len(found)
            counts[label][1] += len(audio) / 2 / SAMPLE_RATE
            for threshold in THRESHOLDS:
                lower[(label, threshold)] += len(fired(trace, threshold, detector.refractory_samples))
            cpu_s, audio_s = cpu_s + cpu, audio_s + len(audio) / 2 / SAMPLE_RATE
        log(f"  {voice.name}: {len(mine)} sentences without the wake word, {len(stream) / 32_000:.0f} s")
    tones = music(MUSIC_S if limit is None else 30)
    found, cpu, trace = detect(detector, tones)
    counts["music"] = [len(found), len(tones) / 2 / SAMPLE_RATE]
    for threshold in THRESHOLDS:
        lower[("music", threshold)] = len(fired(trace, threshold, detector.refractory_samples))
    cpu_s, audio_s = cpu_s + cpu, audio_s + len(tones) / 2 / SAMPLE_RATE
    result["false"] = {}
    for label, (wakes, seconds) in counts.items():
        hours = seconds / 3600
        result["false"][label] = {
            "hours": round(hours, 3),
            "wakes": wakes,
            "per_hour": round(wakes / hours, 2),
        } | {f"wakes_{t:g}": lower[(label, t)] for t in THRESHOLDS}
        log(f"  false wakes, {label}: {wakes} in {hours * 60:.0f} min")
    near = build_corpus(model_dir, questions=NEAR, voices=voices, snr_db=None, cache_dir=cache_dir)
    traces = [detect(detector, item.pcm)[2] for item in near]
    result["false"]["near misses"] = {"takes": len(near)} | {
        f"woke_{t:g}": sum(bool(fired(trace, t, detector.refractory_samples)) for trace in traces)
        for t in (detector.threshold, *THRESHOLDS)
    }
    speech = b"".join(sample)
    result["cpu"] = _cpu(asr, speech, cpu_s / audio_s, asr_minutes if limit is None else 0.5, log)
    return result


def _noisy_stream(pcm: bytes, snr_db: float, block_s: int = 30) -> bytes:
    """``pcm`` with pink noise at ``snr_db`` below its speech's RMS (samples over -40 dBFS), made
    in blocks of ``block_s`` (an hour's noise in one FFT would take gigabytes)."""
    from assistant.audio.convert import float_to_pcm16, pcm16_to_float
    from assistant.bench.corpus import pink_noise

    samples = pcm16_to_float(pcm)
    voiced = np.abs(samples) > 0.01
    speech_rms = float(np.sqrt(np.mean(samples[voiced] ** 2))) if voiced.any() else 0.1
    gain = np.float32(speech_rms / 10 ** (snr_db / 20))
    block = block_s * SAMPLE_RATE
    out = [
        float_to_pcm16(samples[i : i + block] + pink_noise(min(block, samples.size - i), seed=i) * gain)
        for i in range(0, samples.size, block)
    ]
    return b"".join(out)


def _heard(
    asr: Any, questions: Sequence[str], after: Sequence[bytes | None], alone: Sequence[CorpusItem]
) -> dict[str, Any]:
    """Whisper on what follows the wake word (where it was heard) against the same question said
    alone in the same voice: word errors, and the takes heard word for word."""
    from assistant.bench.wer import normalize, wer_counts

    pairs_after, pairs_alone = [], []
    for question, audio, item in zip(questions, after, alone, strict=True):
        if audio is None:
            continue
        pairs_after.append((question, asr.transcribe(audio).text))
        pairs_alone.append((question, asr.transcribe(item.pcm).text))
    after_counts, alone_counts = wer_counts(pairs_after), wer_counts(pairs_alone)
    return {
        "takes": len(pairs_after),
        "exact_after_wake": sum(normalize(q) == normalize(h) for q, h in pairs_after),
        "exact_alone": sum(normalize(q) == normalize(h) for q, h in pairs_alone),
        "errors_after_wake": after_counts.errors,
        "errors_alone": alone_counts.errors,
        "words": after_counts.ref_words,
        "wer_after_wake": round(after_counts.wer, 4),
        "wer_alone": round(alone_counts.wer, 4),
    }


def _heard_totals(heard: dict[str, dict[str, Any]]) -> dict[str, Any]:
    keys = ("takes", "exact_after_wake", "exact_alone", "errors_after_wake", "errors_alone", "words")
    total = {key: sum(row[key] for row in heard.values()) for key in keys}
    words = max(1, total["words"])
    total["wer_after_wake"] = round(total["errors_after_wake"] / words, 4)
    total["wer_alone"] = round(total["errors_alone"] / words, 4)
    return total


def _totals(voices: dict[str, dict[str, dict[str, int]]]) -> dict[str, Any]:
    totals: dict[str, Any] = {}
    for row in voices.values():
        for label, cell in row.items():
            total = totals.setdefault(label, dict.fromkeys(cell, 0))
            for key in total:
                total[key] += cell[key]
    for total in totals.values():
        total["rate"] = round(total["misses"] / max(1, total["takes"]), 4)
    return totals


def _cpu(
    asr: Any, speech: bytes, detector_per_s: float, minutes: float, log: Callable[[str], None]
) -> dict[str, float]:
    """CPU seconds per hour: the detector, against the VAD and Whisper on every utterance."""
    from assistant.config import Config
    from assistant.messages import AudioIn, Utterance
    from assistant.stages.vad import VadStage
    from assistant.turn.reports import ReportLog

    config = Config()
    sample = speech[: int(minutes * 60 * SAMPLE_RATE) * 2]
    vad = VadStage(config.vad, ReportLog())
    started = time.process_time()
    utterances = []
    size = 2 * SAMPLE_RATE * 20 // 1000
    for i in range(0, len(sample), size):
        utterances += [m for m in vad.feed(AudioIn(sample[i : i + size], i / 32)) if isinstance(m, Utterance)]
    vad_s = time.process_time() - started
    started = time.process_time()
    for utterance in utterances:
        asr.transcribe(utterance.pcm)
    asr_s = time.process_time() - started
    hours = len(sample) / 2 / SAMPLE_RATE / 3600
    log(f"  always-on: {len(utterances)} utterances transcribed in {hours * 60:.0f} min of speech")
    return {
        "detector_s_per_hour": round(detector_per_s * 3600, 1),
        "vad_s_per_hour": round(vad_s / hours, 1),
        "asr_s_per_hour_of_speech": round(asr_s / hours, 1),
        "always_on_s_per_hour_of_speech": round((vad_s + asr_s) / hours, 1),
        "utterances_per_hour": round(len(utterances) / hours, 1),
        "measured_minutes": round(hours * 60, 1),
    }


def format_wake(result: dict[str, Any]) -> str:
    """The figures as a plain table."""
    labels = list(result["misses"])
    lines = [f"wake word {result['model']} (threshold {result['threshold']:.2f}): misses per voice"]
    lines.append(f"  {'voice':24}" + "".join(f"{label:>14}" for label in labels))
    for voice, row in result["voices"].items():
        cells = "".join(f"{row[label]['misses']:>6}/{row[label]['takes']:<7}" for label in labels)
        lines.append(f"  {voice:24}{cells}")
    totals = result["misses"]
    lines.append(f"  {'all':24}" + "".join(f"{totals[label]['rate'] * 100:>13.1f}%" for label in labels))
    lines.append("the question after the wake word, as Whisper heard it (detected clean takes):")
    lines.append(f"  {'voice':24}{'takes':>6}{'word for word':>15}{'WER':>8}{'said alone: WER':>17}")
    for voice, heard in result["heard"].items():
        after, alone = heard["wer_after_wake"] * 100, heard["wer_alone"] * 100
        lines.append(
            f"  {voice:24}{heard['takes']:>6}{heard['exact_after_wake']:>15}{after:>7.1f}%{alone:>16.1f}%"
        )
    lines.append("false wakes:")
    for label, cell in result["false"].items():
        if "per_hour" in cell:
            lines.append(
                f"  {label:24}{cell['wakes']:>4} in {cell['hours']:.2f} h = {cell['per_hour']:.2f} per hour"
            )
        else:
            woke = cell[f"woke_{result['threshold']:g}"]
            lines.append(f"  {label:24}{woke:>4} of {cell['takes']} takes woke it")
    lines.append("by threshold: misses (all voices) and false wakes")
    false, near = result["false"], result["false"]["near misses"]
    lines.append(f"  {'threshold':>9}" + "".join(f"{label:>10}" for label in labels) + "".join(
        f"{label:>16}" for label in false if label != "near misses") + f"{'near misses':>13}")  # fmt: skip
    for threshold in (result["threshold"], *THRESHOLDS):
        key = "" if threshold == result["threshold"] else f"_{threshold:g}"
        cells = "".join(f"{totals[label]['misses' + key]:>10}" for label in labels)
        cells += "".join(
            f"{cell['wakes' + key]:>16}" for label, cell in false.items() if label != "near misses"
        )
        lines.append(f"  {threshold:>9.2f}{cells}{near[f'woke_{threshold:g}']:>13}")
    cpu = result["cpu"]
    lines.append("CPU seconds per hour:")
    lines.append(f"  wake word detector, any audio        {cpu['detector_s_per_hour']:>8.1f}")
    lines.append(f"  VAD, any audio                       {cpu['vad_s_per_hour']:>8.1f}")
    lines.append(f"  always-on (VAD + Whisper), of speech {cpu['always_on_s_per_hour_of_speech']:>8.1f}")
    measured = (
        f"{cpu['utterances_per_hour']:.0f} utterances per hour; {cpu['measured_minutes']:.0f} min measured"
    )
    lines.append(f"  ({measured})")
    return "\n".join(lines)
