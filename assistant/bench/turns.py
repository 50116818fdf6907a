"""The semantic end of turn, measured on the audio timeline: endpointing and cut-offs on spoken
requests with a pause in the middle ("What is the capital of ... Australia?") and on finished
ones, with the turn model off, on, and combined with the transcript.

Each utterance is spoken by espeak-ng voices and the default piper voice. A paused one is the
whole sentence spoken with a break at the pause (espeak-ng: SSML ``<break>``; piper: a comma),
its gap then set to exactly ``pause_ms`` of silence, so the words before the pause carry the
sentence's own, unfinished, intonation. The true end of speech is measured from the clean
samples (``corpus.speech_bounds``).

The real ``VadStage`` runs over each item (unpaced, frame by frame). At each pause the turn model
(the real ONNX model) and ASR (the real faster-whisper) are run on the paused audio; their
verdicts reach the endpointer on the audio timeline ``model_delay_ms`` and ``asr_delay_ms`` after
the pause (how long they take on a loaded machine, as given), exactly as the controller passes
them on (``VadStage.transcribed``). Recognised
commands (``end_now``) are not modelled: every item is judged as a question to the LLM.

Modes: ``today`` (the transcript's quick end only, as before the turn model), ``off`` (the
transcript's verdict: the quick end and the open-word hold), ``on`` (the turn model alone, every
transcript taken as ``unsure``), ``combined`` (both). Results: per mode and kind
(paused/finished), endpointing (endpoint - true end of speech) p50/p90 over the turns not cut, and
the cut-offs (a paused item whose first endpoint falls before its second part). The model's CPU
time per call is measured too.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt

from assistant.bench.corpus import PEAK, Voice, speech_bounds
from assistant.config import VadConfig
from assistant.errors import AudioError
from assistant.messages import SAMPLE_RATE, AudioIn, Utterance

PAUSED: tuple[tuple[str, str], ...] = (
    ("Set a timer for", "ten minutes."),
    ("What is the capital of", "Australia?"),
    ("Turn on the", "kitchen lights."),
    ("Remind me to call", "my mother tonight."),
    ("What is the weather like", "tomorrow?"),
    ("How many days are in", "a leap year?"),
    ("Play some music in", "the bedroom."),
    ("What is twelve times", "four?"),
)
"""Requests said with a pause in the middle: (before the pause, after it)."""

FINISHED: tuple[str, ...] = (
    "What is the capital of France?",
    "What time is it?",
    "Will it rain today?",
    "Turn off the living room lamp.",
    "Who wrote Romeo and Juliet?",
    "How far away is the moon?",
    "Tell me a short joke.",
    "Lock the front door.",
    "What day is it today?",
    "Set a timer for ten minutes.",
)
"""Finished requests, said without a pause."""

VOICES: tuple[Voice, ...] = (
    Voice("piper", "piper"),
    Voice("espeak-en-us", "espeak", "en-us", 160, 50),
    Voice("espeak-en-gb-rp", "espeak", "en-gb-x-rp", 140, 35),
    Voice("espeak-en-f3", "espeak", "en-us+f3", 185, 70),
)
PAUSES_MS = (600.0, 750.0, 900.0)
"""Silence inserted at the pause, in turn per item."""
MODES = ("today", "off", "on", "combined")
LEAD_MS, TRAIL_MS = 300.0, 2000.0
FRAME_MS = 30


@dataclass(frozen=True)
class TurnItem:
    """One utterance: 16 kHz int16 with its true bounds."""

    id: str
    text: str
    voice: str
    pcm: bytes
    speech_end_ms: float
    """True end of speech (clean samples), ms from the item's start."""
    resume_ms: float | None = None
    """Where speech resumes after the pause (paused items), ms from the item's start."""


@dataclass(frozen=True)
class Outcome:
    item: TurnItem
    mode: str
    endpoint_ms: float
    """The first final endpoint, ms from the item's start."""
    cut: bool
    probability: float | None
    """The turn model's verdict at the first pause (None: no pause)."""
    transcript: str


def _espeak(text: str, voice: Voice, tmp: Path, *, ssml: bool = False) -> npt.NDArray[np.float32]:
    from assistant.audio.convert import pcm16_to_float, read_audio_file

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise AudioError("turns: espeak-ng is not installed (apt-get install espeak-ng)")
    out = tmp / "take.wav"
    cmd = [exe, "-v", voice.espeak_voice, "-s", str(voice.speed), "-p", str(voice.pitch), "-w", str(out)]
    subprocess.run([*cmd, *(["-m"] if ssml else []), text], check=True, capture_output=True, timeout=60)
    return pcm16_to_float(read_audio_file(out))


def _widest_gap(x: npt.NDArray[np.float32], threshold: float = 0.01) -> tuple[int, int]:
    """(end of sound, start of sound again) around the longest quiet stretch inside the speech."""
    loud = np.flatnonzero(np.abs(x) > threshold)
    gaps = np.diff(loud)
    i = int(np.argmax(gaps))
    return int(loud[i]) + 1, int(loud[i + 1])


def _item(
    ident: str, text: str, voice: str, take: npt.NDArray[np.float32], pause_ms: float | None
) -> TurnItem:
    from assistant.audio.convert import float_to_pcm16

    peak = float(np.max(np.abs(take))) or 1.0
    take = take * np.float32(PEAK / peak)
    first, last = speech_bounds(take)
    speech = take[first:last]
    resume = None
    if pause_ms is not None:
        stop, again = _widest_gap(speech)
        silence = np.zeros(round(pause_ms * SAMPLE_RATE / 1000), np.float32)
        speech = np.concatenate([speech[:stop], silence, speech[again:]])
        resume = LEAD_MS + (stop + silence.size) * 1000 / SAMPLE_RATE
    lead = np.zeros(round(LEAD_MS * SAMPLE_RATE / 1000), np.float32)
    trail = np.zeros(round(TRAIL_MS * SAMPLE_RATE / 1000), np.float32)
    pcm = float_to_pcm16(np.concatenate([lead, speech, trail]))
    end = LEAD_MS + speech.size * 1000 / SAMPLE_RATE
    return TurnItem(ident, text, voice, pcm, end, resume)


def build_items(model_dir: Path, voices: Sequence[Voice] = VOICES) -> list[TurnItem]:
    """The paused and the finished items in every voice."""
    from assistant import models
    from assistant.audio.convert import pcm16_to_float, resample
    from assistant.config import TtsConfig
    from assistant.engines.piper import PiperEngine

    items: list[TurnItem] = []
    piper = None
    if any(voice.engine == "piper" for voice in voices):
        piper = PiperEngine(models.resolve("piper-en_US-joe-medium", "tts", model_dir), TtsConfig())
    with tempfile.TemporaryDirectory(prefix="turns-") as folder:
        tmp = Path(folder)
        for voice in voices:
            for n, (head, tail) in enumerate(PAUSED):
                if voice.engine == "piper" and piper is not None:
                    take = resample(
                        pcm16_to_float(piper.synthesize_all(f"{head}, {tail}")), piper.sample_rate
                    )
                else:
                    ssml = f'<speak>{head} <break time="800ms"/> {tail}</speak>'
                    take = _espeak(ssml, voice, tmp, ssml=True)
                pause = PAUSES_MS[n % len(PAUSES_MS)]
                items.append(_item(f"p{n}-{voice.name}", f"{head} {tail}", voice.name, take, pause))
            for n, text in enumerate(FINISHED):
                if voice.engine == "piper" and piper is not None:
                    take = resample(pcm16_to_float(piper.synthesize_all(text)), piper.sample_rate)
                else:
                    take = _espeak(text, voice, tmp)
                items.append(_item(f"f{n}-{voice.name}", text, voice.name, take, None))
    return items


@dataclass
class Judges:
    """What is asked at a pause: the turn model and ASR (real engines), and their CPU times."""

    probability: Callable[[bytes], float]
    transcribe: Callable[[bytes], str]
    model_cpu_ms: list[float] = dataclasses.field(default_factory=list)

    def judge(self, pcm: bytes) -> tuple[float, str]:
        start = time.process_time()
        p = self.probability(pcm)
        self.model_cpu_ms.append((time.process_time() - start) * 1000)
        return p, self.transcribe(pcm)


def run_item(
    item: TurnItem,
    mode: str,
    verdicts: dict[tuple[str, int], tuple[float, str]],
    judges: Judges,
    config: VadConfig,
    *,
    model_delay_ms: float,
    asr_delay_ms: float,
) -> Outcome:
    """Endpoint ``item`` with the real VAD stage in ``mode``; the judges' verdicts at each pause
    are cached in ``verdicts`` (by item and pause position) so every mode hears the same."""
    from assistant.stages.vad import VadStage
    from assistant.text.speakable import looks_complete
    from assistant.turn.reports import EndpointFinal, ReportLog

    channel = ReportLog()
    vad = VadStage(dataclasses.replace(config, turn_model=False), channel)
    step = 2 * SAMPLE_RATE * FRAME_MS // 1000
    due: list[tuple[float, Callable[[], None]]] = []
    first_p: float | None = None
    heard = ""
    for offset in range(0, len(item.pcm) - step + 1, step):
        at_ms = offset / 2 / SAMPLE_RATE * 1000
        now = at_ms + FRAME_MS
        for message in vad.feed(AudioIn(item.pcm[offset : offset + step], at_ms)):
            if not (isinstance(message, Utterance) and message.speculative):
                continue
            key = (item.id, round(now))
            if key not in verdicts:
                verdicts[key] = judges.judge(message.pcm)
            p, text = verdicts[key]
            first_p = p if first_p is None else first_p
            heard = heard or text
            turn = message.turn_id
            if mode in ("on", "combined"):
                due.append((now + model_delay_ms, partial(vad.turn_verdict, turn, p)))
            if mode == "today" and looks_complete(text):
                due.append((now + asr_delay_ms, partial(vad.quick_end, turn)))
            elif mode in ("off", "combined"):
                due.append((now + asr_delay_ms, partial(vad.transcribed, turn, text)))
            elif mode == "on":  # the words say nothing: the model alone decides
                due.append((now + asr_delay_ms, partial(vad.transcribed, turn, "")))
        for _, act in [d for d in due if d[0] <= now]:
            act()
        due = [d for d in due if d[0] > now]
        if any(isinstance(r, EndpointFinal) for r in channel.reports):
            break
    finals = [r for r in channel.reports if isinstance(r, EndpointFinal)]
    endpoint = finals[0].endpoint_ms if finals else len(item.pcm) / 2 / SAMPLE_RATE * 1000
    cut = item.resume_ms is not None and endpoint < item.resume_ms
    return Outcome(item, mode, endpoint, cut, first_p, heard)


def measure(
    items: Sequence[TurnItem],
    judges: Judges,
    config: VadConfig,
    *,
    modes: Sequence[str] = MODES,
    model_delay_ms: float = 150.0,
    asr_delay_ms: float = 200.0,
) -> list[Outcome]:
    """Every item in every mode."""
    verdicts: dict[tuple[str, int], tuple[float, str]] = {}
    delays = {"model_delay_ms": model_delay_ms, "asr_delay_ms": asr_delay_ms}
    return [run_item(item, mode, verdicts, judges, config, **delays) for mode in modes for item in items]


def summary(outcomes: Sequence[Outcome]) -> list[dict[str, object]]:
    """Per mode and kind: items, cut-offs, endpointing p50/p90 (ms from the true end, turns not cut)."""
    rows: list[dict[str, object]] = []
    for mode in dict.fromkeys(o.mode for o in outcomes):
        for kind, paused in (("paused", True), ("finished", False)):
            group = [o for o in outcomes if o.mode == mode and (o.item.resume_ms is not None) == paused]
            if not group:
                continue
            lags = [o.endpoint_ms - o.item.speech_end_ms for o in group if not o.cut]
            rows.append(
                {
                    "mode": mode,
                    "kind": kind,
                    "items": len(group),
                    "cut": sum(o.cut for o in group),
                    "p50_ms": round(float(np.percentile(lags, 50))) if lags else None,
                    "p90_ms": round(float(np.percentile(lags, 90))) if lags else None,
                    "max_ms": round(max(lags)) if lags else None,
                }
            )
    return rows
