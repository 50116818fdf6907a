"""``assistant bench --echo``: what WebRTC's audio processing does for the microphone, measured.

- **Echo return loss enhancement** (ERLE, dB), stage level and deterministic: the reply (the
  corpus's questions in piper's voice, one after the other, as the speaker would play them) goes
  through a room-like echo path (``room_echo``: a direct path after ``delay_ms``, then an
  exponentially decaying diffuse tail, RT60 ``rt60_ms``) into the microphone at 0 dB (the echo as
  loud as the reply is played) over a quiet noise floor. The real stage
  (``stages/apm.AudioProcessingStage``) gets the microphone in 20 ms pieces stamped with jittered
  arrival times, and the reply as a live speaker would report it (``reference.PlayedAudio``,
  filed by when each block is heard). ERLE = microphone power / output power, over the reply's
  second half (after convergence) and over all of it; without AEC it is 0 dB. Also double talk:
  a question spoken over the reply at 0 dB, and how much of it survives (its word error rate in
  Whisper, raw microphone against processed). And the share of a question's 10 ms frames a
  canceller keeps within 6 dB when it is said 0.5 to 11.5 s into the canceller's first far end,
  with no echo, at -18 dB and at 0 dB, warmed up and fresh (``measure_near_end``).
- **Noise**: the corpus's clean items in every voice with pink noise at two SNRs (``SNRS``, dB),
  transcribed by Whisper (the default ``[asr]`` model) raw, with noise suppression at two levels,
  and with suppression and gain control. Each item is processed as one stream that starts with
  a second of the item's own noise (a live microphone's suppressor has long learnt the room).
- **CPU per hour** of the APM (process time), each feature alone and all together, over the
  same audio.

The loopback on virtual devices (PulseAudio null sinks, the real sink's clock) is measured by
``tests/test_echo.py``. Heavy imports are lazy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from assistant.audio.processing import Features, Processor
from assistant.audio.reference import PlayedAudio
from assistant.bench.corpus import COMMANDS, QUESTIONS, CorpusItem, add_noise, build_corpus, speech_bounds
from assistant.bench.wer import wer_counts
from assistant.config import AudioProcessingConfig
from assistant.messages import SAMPLE_RATE, AudioIn

SNRS = (10.0, 0.0)
"""Speech-to-noise ratios of the noisy items, in dB."""
PIECE = SAMPLE_RATE * 20 // 1000
"""Samples per microphone piece (20 ms, as the live sources send)."""


def room_echo(
    far: npt.NDArray[np.float32],
    *,
    delay_ms: float = 30.0,
    rt60_ms: float = 250.0,
    seed: int = 7,
    like: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float32]:
    """``far`` as a microphone across a room hears it: a direct path after ``delay_ms`` and a
    diffuse tail decaying by 60 dB in ``rt60_ms``, scaled so that the echo of ``like`` (default
    ``far`` itself) is as loud as ``like`` (0 dB echo)."""
    rng = np.random.default_rng(seed)
    delay = int(delay_ms * SAMPLE_RATE / 1000)
    length = int(rt60_ms * SAMPLE_RATE / 1000)
    decay = np.exp(-6.9 * np.arange(length) / length)  # -60 dB at the end
    response = np.zeros(delay + length, dtype=np.float64)
    response[delay] = 1.0
    response[delay + 1 :] += 0.3 * rng.standard_normal(length - 1) * decay[1:]
    base = (far if like is None else like).astype(np.float64)
    scale = np.sqrt(float(np.mean(base**2)) / max(float(np.mean(np.convolve(base, response) ** 2)), 1e-12))
    echo = np.convolve(far.astype(np.float64), response)[: len(far)]
    result: npt.NDArray[np.float32] = (echo * scale).astype(np.float32)
    return result


class _Played:
    """A live speaker's report of what it played (``contracts.EchoReference``) from a ring."""

    def __init__(self, ring: PlayedAudio) -> None:
        self.ring = ring

    def played(self, start_ns: int, count: int) -> bytes:
        return self.ring.read(start_ns, count).tobytes()


def through_stage(
    mic: npt.NDArray[np.int16],
    far: npt.NDArray[np.int16] | None,
    config: AudioProcessingConfig,
    *,
    jitter_ms: float = 8.0,
    seed: int = 3,
) -> npt.NDArray[np.int16]:
    """``mic`` through the APM stage in 20 ms pieces, as if live: each piece arrives after its
    last sample plus a random delay of up to ``jitter_ms``; ``far`` (same length) is filed in the
    speaker's ring by when it is heard, 60 ms before it is (None: no speaker)."""
    from assistant.stages.apm import AudioProcessingStage
    from assistant.turn.reports import ReportLog

    ring = PlayedAudio()
    stage = AudioProcessingStage(config, ReportLog(), _Played(ring) if far is not None else None)
    rng = np.random.default_rng(seed)
    origin_ns = 1_000_000_000_000
    out: list[bytes] = []
    ns = 1_000_000_000 // SAMPLE_RATE
    filed = 0
    for at in range(0, len(mic) - PIECE + 1, PIECE):
        if far is not None:  # a speaker files its blocks about 60 ms before they are heard
            ahead = min(len(far), at + PIECE + SAMPLE_RATE * 60 // 1000)
            if ahead > filed:
                ring.write(origin_ns + filed * ns, far[filed:ahead])
                filed = ahead
        arrived = origin_ns + (at + PIECE) * ns + int(rng.uniform(0, jitter_ms) * 1e6)
        piece = AudioIn(mic[at : at + PIECE].tobytes(), at / SAMPLE_RATE * 1000, arrived)
        out += [p.pcm for p in stage.feed(piece)]
    return np.frombuffer(b"".join(out), dtype="<i2")


def _power(samples: npt.NDArray[np.generic]) -> float:
    return float(np.mean(samples.astype(np.float64) ** 2)) + 1e-9


def erle_db(mic: npt.NDArray[np.int16], out: npt.NDArray[np.int16], span: slice) -> float:
    """Echo return loss enhancement over ``span``: microphone power / output power, in dB."""
    return round(float(10 * np.log10(_power(mic[span]) / _power(out[span]))), 1)


def _to_int16(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    return np.clip(np.round(samples), -32768, 32767).astype(np.int16)


def measure_erle(
    reply: npt.NDArray[np.int16], question: npt.NDArray[np.int16], asr: Any, log: Callable[[str], None]
) -> dict[str, Any]:
    """ERLE of the stage on ``reply`` echoed at 0 dB; and ``question`` said over it (double talk)."""
    rng = np.random.default_rng(11)
    far = reply.astype(np.float32)
    echo = room_echo(far)
    floor = rng.standard_normal(len(far)).astype(np.float32) * 30.0  # about -60 dBFS
    mic = _to_int16(echo + floor)
    aec = AudioProcessingConfig(inputs="all", echo_cancellation=True, noise_suppression="off")
    with_ns = replace(aec, noise_suppression="moderate")
    result: dict[str, Any] = {"reply_s": round(len(reply) / SAMPLE_RATE, 1)}
    on = np.flatnonzero(np.abs(reply) > 300)
    half = slice(int((on[0] + on[-1]) // 2), int(on[-1]))
    whole = slice(int(on[0]), int(on[-1]))
    out = through_stage(mic, reply, aec)
    result["erle_db"] = {"aec_second_half": erle_db(mic, out, half), "aec_whole": erle_db(mic, out, whole)}
    result["erle_db"]["none"] = erle_db(mic, mic, half)
    out_ns = through_stage(mic, reply, with_ns)
    result["erle_db"]["aec_ns_second_half"] = erle_db(mic, out_ns, half)
    late = through_stage(mic, np.roll(reply, SAMPLE_RATE // 10), aec)  # the reference 100 ms late
    result["erle_db"]["aec_reference_100ms_late"] = erle_db(mic, late, half)
    log(f"  ERLE over the reply's second half: {result['erle_db']['aec_second_half']} dB")

    # double talk: the question at 0 dB over the reply's second half
    start = int(half.start)
    user = np.zeros(len(far), dtype=np.float32)
    take = question.astype(np.float32)[: len(far) - start]
    user[start : start + len(take)] = take * np.sqrt(_power(echo[half]) / _power(take[np.abs(take) > 300]))
    talk = _to_int16(echo + floor + user)
    cut = start + SAMPLE_RATE // 5  # barge-in: the reply stops 200 ms into the question
    played = reply.copy()
    played[cut:] = 0
    talk_cut = _to_int16(room_echo(played.astype(np.float32), like=far) + floor + user)
    span = slice(start - SAMPLE_RATE // 4, start + len(take) + SAMPLE_RATE // 4)
    hypotheses = {
        "raw": talk[span],
        "aec": through_stage(talk, reply, aec)[span],
        "raw_cut_200ms": talk_cut[span],
        "aec_cut_200ms": through_stage(talk_cut, played, aec)[span],
        "alone": _to_int16(user + floor)[span],
    }
    result["double_talk"] = {}
    for name, heard in hypotheses.items():
        text = str(asr.transcribe(heard.tobytes()).text)
        result["double_talk"][name] = {"heard": text, "wer": round(wer_counts([(QUESTIONS[0], text)]).wer, 3)}
    log(f"  double talk at 0 dB: {result['double_talk']}")
    return result


def frames_kept(out: npt.NDArray[np.int16], user: npt.NDArray[np.float32], span: slice) -> float:
    """Of the user's 10 ms frames in ``span`` above about -50 dBFS, the share that ``out`` keeps
    within 6 dB of the user's own level (the echo canceller's cut of the near end)."""
    frame = SAMPLE_RATE // 100
    pairs = [
        (_power(user[i : i + frame]), _power(out[i : i + frame]))
        for i in range(span.start, span.stop - frame, frame)
    ]
    loud = [(u, o) for u, o in pairs if u > 1e5]
    return sum(o > u / 4 for u, o in loud) / max(len(loud), 1)


def measure_near_end(
    reply: npt.NDArray[np.int16], word: npt.NDArray[np.int16], onsets_s: Sequence[float]
) -> dict[str, dict[str, float]]:
    """How much of ``word`` (the user) a canceller keeps when it is said over ``reply`` at each
    of ``onsets_s`` (seconds into the canceller's first far end), with no echo, the reply's echo
    through a room at -18 dB, and at 0 dB (as loud as the word); a warmed-up canceller (as the
    daemon makes it) and a fresh one (the library's own start). The mean share of the word's
    frames kept within 6 dB (``frames_kept``)."""
    far = reply.astype(np.float32)
    take = word.astype(np.float32)
    result: dict[str, dict[str, float]] = {}
    for name, echo_db in (("no_echo", None), ("echo_-18dB", -18.0), ("echo_0dB", 0.0)):
        if echo_db is None:
            echo = np.zeros_like(far)
        else:
            echo = room_echo(far, like=take) * np.float32(10 ** (echo_db / 20))
        row: dict[str, float] = {}
        for warm in (True, False):
            kept = []
            for onset in onsets_s:
                start = int(onset * SAMPLE_RATE)
                user = np.zeros_like(far)
                user[start : start + len(take)] = take[: len(far) - start]
                end = min(len(far), start + len(take) + SAMPLE_RATE // 2)
                mic = _to_int16(echo[:end] + user[:end])
                processor = Processor(Features(echo=True, noise="off", gain=False), warm=warm)
                out = np.concatenate(
                    [
                        processor.process(mic[i : i + PIECE], reply[i : i + PIECE])
                        for i in range(0, len(mic) - PIECE + 1, PIECE)
                    ]
                )
                kept.append(frames_kept(out, user, slice(start, min(start + len(take), len(out)))))
            row["warm" if warm else "fresh"] = round(float(np.mean(kept)), 2)
        result[name] = row
    return result


NS_VARIANTS: dict[str, AudioProcessingConfig] = {
    "raw": AudioProcessingConfig(inputs="none"),
    "ns_moderate": AudioProcessingConfig(
        inputs="all", echo_cancellation=False, noise_suppression="moderate", gain_control=False
    ),
    "ns_very_high": AudioProcessingConfig(
        inputs="all", echo_cancellation=False, noise_suppression="very_high", gain_control=False
    ),
    "ns_moderate_agc": AudioProcessingConfig(
        inputs="all", echo_cancellation=False, noise_suppression="moderate", gain_control=True
    ),
}
"""The settings the noisy items are transcribed with."""


def noisy(items: Sequence[CorpusItem], snr_db: float) -> list[tuple[CorpusItem, npt.NDArray[np.int16]]]:
    """Each clean item with pink noise at ``snr_db`` over it, after a second of the same noise."""
    out = []
    for index, item in enumerate(items):
        clean = (np.frombuffer(item.pcm, dtype="<i2") / np.float32(32768)).astype(np.float32)
        padded = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), clean]).astype(np.float32)
        first, last = speech_bounds(clean)
        mixed = add_noise(padded, (first + SAMPLE_RATE, last + SAMPLE_RATE), snr_db, seed=1000 + index)
        out.append((item, _to_int16(mixed * 32767)))
    return out


def measure_noise(
    items: Sequence[CorpusItem], asr: Any, snrs: Sequence[float], log: Callable[[str], None]
) -> dict[str, Any]:
    """Word error rates of ``items`` under noise at each SNR, per ``NS_VARIANTS`` setting."""
    result: dict[str, Any] = {}
    for snr in snrs:
        rows: dict[str, Any] = {}
        takes = noisy(items, snr)
        for name, config in NS_VARIANTS.items():
            pairs = []
            for item, mic in takes:
                heard = mic if config.inputs == "none" else through_stage(mic, None, config)
                pairs.append((item.text, str(asr.transcribe(heard[SAMPLE_RATE:].tobytes()).text)))
            counts = wer_counts(pairs)
            rows[name] = {"wer": round(counts.wer, 4), "words": counts.ref_words}
            log(f"  SNR {snr:g} dB, {name}: WER {counts.wer:.1%}")
        result[f"{snr:g}"] = rows
    return result


def measure_cpu(audio: npt.NDArray[np.int16], far: npt.NDArray[np.int16]) -> dict[str, float]:
    """Process seconds per hour of microphone audio, per feature and all together."""
    variants = {
        "aec": Features(echo=True, noise="off", gain=False),
        "ns": Features(echo=False, noise="moderate", gain=False),
        "agc": Features(echo=False, noise="off", gain=True),
        "aec_ns_agc": Features(echo=True, noise="moderate", gain=True),
    }
    hours = len(audio) / SAMPLE_RATE / 3600
    result: dict[str, float] = {}
    for name, features in variants.items():
        processor = Processor(features)
        started = time.process_time()
        for at in range(0, len(audio) - PIECE + 1, PIECE):
            processor.process(audio[at : at + PIECE], far[at : at + PIECE] if features.echo else None)
        result[f"{name}_s_per_hour"] = round((time.process_time() - started) / hours, 1)
    result["measured_s"] = round(hours * 3600, 1)
    return result


def run_echo_bench(
    model_dir: Path, *, limit: int | None = None, log: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """ERLE, double talk, WER with and without noise suppression, CPU (see the module docstring).
    ``limit``: only so many questions per voice in the noise part."""
    from assistant import models
    from assistant.config import AsrConfig
    from assistant.engines.whisper import WhisperEngine

    asr = WhisperEngine(models.resolve(AsrConfig().model, "asr", model_dir), AsrConfig())
    items = [i for i in build_corpus(model_dir) if i.snr_db is None]
    piper = [np.frombuffer(i.pcm, dtype="<i2") for i in items if i.voice == "piper"]
    reply = np.concatenate(piper[1:12])  # about 20 s of speech, as a long reply
    log("echo: ERLE at the stage")
    result: dict[str, Any] = {"echo": measure_erle(reply, piper[0], asr, log)}
    log("echo: the user's words kept by the canceller over the first far end")
    result["echo"]["near_end_kept"] = measure_near_end(reply, piper[0], np.arange(0.5, 12.0, 1.0).tolist())
    wanted = set(list(QUESTIONS + COMMANDS)[:limit])
    log("noise: WER with and without noise suppression")
    result["noise"] = measure_noise([i for i in items if i.text in wanted], asr, SNRS, log)
    loop = np.tile(reply, 3)
    noise = (np.random.default_rng(5).standard_normal(len(loop)) * 300).astype(np.float32)
    mic = _to_int16(room_echo(loop.astype(np.float32)) + noise)
    result["cpu"] = measure_cpu(mic, loop)
    return result


def format_echo(result: dict[str, Any]) -> str:
    """The bench's figures as a short text table."""
    echo = result["echo"]
    erle = echo["erle_db"]
    lines = [
        f"echo return loss enhancement (stage, 0 dB echo through a room, {echo['reply_s']} s reply):",
        f"  AEC, reply's second half      {erle['aec_second_half']:>6} dB",
        f"  AEC, whole reply              {erle['aec_whole']:>6} dB",
        f"  AEC + NS, second half         {erle['aec_ns_second_half']:>6} dB",
        f"  AEC, reference 100 ms late    {erle['aec_reference_100ms_late']:>6} dB",
        f"  none                          {erle['none']:>6} dB",
        "a question over the reply at 0 dB (WER, Whisper):",
    ]
    for name, row in echo["double_talk"].items():
        lines.append(f"  {name:6} {row['wer']:>6.1%}  {row['heard']!r}")
    lines.append(
        "a question over the first 12 s of a fresh canceller's far end (its frames kept within 6 dB):"
    )
    for name, row in echo["near_end_kept"].items():
        lines.append(f"  {name:11} warmed up {row['warm']:.0%}  fresh {row['fresh']:.0%}")
    lines.append("noisy corpus items (WER, Whisper):")
    for snr, rows in result["noise"].items():
        cells = "  ".join(f"{name} {row['wer']:.1%}" for name, row in rows.items())
        lines.append(f"  SNR {snr:>3} dB: {cells}")
    cpu = result["cpu"]
    lines.append(f"CPU seconds per hour of microphone audio ({cpu['measured_s']} s measured):")
    lines.append(
        "  " + "  ".join(f"{k.removesuffix('_s_per_hour')} {v}" for k, v in cpu.items() if k != "measured_s")
    )
    return "\n".join(lines)
