"""Transcription during speech, measured: the VAD and ASR stages on the bench's corpus in real
time, with and without ``asr.during_speech``, in one run.

Each item is fed as a live microphone would feed it (30 ms pieces at their real pace) through a
``VadStage`` and an ``AsrStage`` on one loaded faster-whisper engine, once with passes during
speech and once without; the two alternate (on, off, then off, on for the next item...) so the
drift of a shared machine touches both alike. Per run it records when the pause's utterance
reached ASR, when its transcript was ready, and the transcript, and reports per mode:

- ``asr_ms``: from the utterance at the pause to the transcript (the ASR's own time);
- ``from_true_end_ms``: from where speech truly ends in the item (its clean signal) to the
  transcript;
- ``after_quick_end_ms``: from the earliest endpoint the pipeline can commit a complete-looking
  turn at (``vad.quick_end_silence_ms`` after the fine end of speech) to the transcript, 0 when
  ready before (the ``asr`` span of a turn ended early);
- WER against the corpus text, and how many utterances were transcribed from agreed words.

Besides the corpus items (mostly 1 to 3 s of speech), ``long_items`` joins the speech of three items of
one voice with 60 ms gaps (no pause) into 4 to 7 s utterances, where a whole-utterance
transcription costs more. Nothing here is a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from assistant.bench.corpus import CorpusItem
from assistant.bench.wer import wer_counts
from assistant.clock import StreamClock
from assistant.config import Config
from assistant.contracts import Transcriber
from assistant.messages import SAMPLE_RATE, AudioIn, EndOfStream, Message, Transcript, Utterance
from assistant.stages.asr import AsrStage
from assistant.stages.vad import VadStage
from assistant.turn.reports import EndpointFinal, ReportLog

PIECE_MS = 30
"""Size of each piece fed, in ms (a microphone's block)."""
TRAIL_MS = 900
"""Silence fed after each item, so that its endpoint comes, in ms."""
GAP_MS = 60
"""Silence between the joined items of a long utterance, in ms (less than a pause)."""


@dataclass
class Run:
    """One item through the two stages in one mode."""

    item_id: str
    during_speech: bool
    reference: str
    heard: str = ""
    asr_ms: float | None = None
    from_true_end_ms: float | None = None
    after_quick_end_ms: float | None = None
    prefixed: bool = False
    """Transcribed at the pause from the words the passes agreed on."""
    ready: bool = False
    """The transcript was a pass's, made on all of the speech before (or while) the pause came."""
    pass_running: bool = False
    """A pass during speech was running when the pause's utterance reached ASR."""
    passes: int = 0
    agreed: str = ""
    """The words the passes agreed on by the end."""


def long_items(items: Sequence[CorpusItem], count: int) -> list[CorpusItem]:
    """``count`` utterances of three items' speech each (same voice and noise, consecutive
    questions), joined by ``GAP_MS`` of silence, with the first item's lead and the last's trail."""
    groups: dict[tuple[str, float | None], list[CorpusItem]] = {}
    for item in items:
        groups.setdefault((item.voice, item.snr_db), []).append(item)
    joined: list[CorpusItem] = []
    keys = sorted(groups, key=str)
    for n in range(count):
        group = groups[keys[n % len(keys)]]
        start = (n // len(keys)) * 3 % max(1, len(group) - 2)
        parts = group[start : start + 3]
        gap = bytes(2 * SAMPLE_RATE * GAP_MS // 1000)
        pcm = bytearray(parts[0].pcm[: _byte(parts[0].speech_end_ms)])
        for part in parts[1:]:
            pcm += gap + part.pcm[_byte(part.speech_start_ms) : _byte(part.speech_end_ms)]
        speech_end = len(pcm) / 2 / SAMPLE_RATE * 1000
        pcm += parts[-1].pcm[_byte(parts[-1].speech_end_ms) :]
        joined.append(
            replace(
                parts[0],
                id="long-" + "+".join(p.id.split("-")[0] for p in parts) + "-" + parts[0].id.split("-", 1)[1],
                text=" ".join(p.text for p in parts),
                pcm=bytes(pcm),
                speech_end_ms=speech_end,
                trail_ms=parts[-1].trail_ms,
            )
        )
    return joined


def _byte(ms: float) -> int:
    return 2 * round(ms * SAMPLE_RATE / 1000)


async def run_item(item: CorpusItem, engine: Transcriber, config: Config, during_speech: bool) -> Run:
    """Feed ``item`` (and ``TRAIL_MS`` of silence) in real time through a VAD and an ASR stage."""
    clock = StreamClock(realtime=True)
    log = ReportLog(clock)
    vad = VadStage(config.vad, log)
    vad.progress_ms = config.asr.during_speech_every_ms if during_speech else 0
    asr = AsrStage(engine, log, config.deadlines, config.latency.transcript_ms, during_speech=during_speech)
    vad_in: asyncio.Queue[Message] = asyncio.Queue()
    asr_in: asyncio.Queue[Message] = asyncio.Queue()
    asr_out: asyncio.Queue[Message] = asyncio.Queue()
    run = Run(item.id, during_speech, item.text)
    arrived: dict[int, float] = {}
    running: dict[int, bool] = {}

    async def relay(vad_out: asyncio.Queue[Message]) -> None:
        while True:
            message = await vad_out.get()
            if isinstance(message, Utterance):
                arrived[message.turn_id] = time.monotonic()
                running[message.turn_id] = asr.passing
            await asr_in.put(message)
            if isinstance(message, EndOfStream):
                return

    heard: list[tuple[Transcript, float]] = []

    async def collect() -> None:
        while not isinstance(message := await asr_out.get(), EndOfStream):
            if isinstance(message, Transcript):
                heard.append((message, time.monotonic()))

    pcm = item.pcm + bytes(2 * SAMPLE_RATE * TRAIL_MS // 1000)
    size = 2 * SAMPLE_RATE * PIECE_MS // 1000
    vad_out: asyncio.Queue[Message] = asyncio.Queue()
    async with asyncio.TaskGroup() as group:
        group.create_task(vad.run(vad_in, vad_out))
        group.create_task(relay(vad_out))
        group.create_task(asr.run(asr_in, asr_out))
        group.create_task(collect())
        start = time.monotonic()
        clock.start(time.monotonic_ns())
        for index in range(0, len(pcm), size):
            due = start + (index + size) / 2 / SAMPLE_RATE
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await vad_in.put(AudioIn(pcm[index : index + size], index / 2 / SAMPLE_RATE * 1000))
        await vad_in.put(EndOfStream())
    if not heard:
        return run
    final, ready = heard[-1]
    run.heard = final.text
    run.prefixed = asr.prefixed > 0
    run.ready = asr.passes.ready_at_pause > 0
    run.passes = asr.passes.passes
    run.agreed = asr.passes.agreed
    run.pass_running = running.get(final.turn_id, False)
    if final.turn_id in arrived:
        run.asr_ms = (ready - arrived[final.turn_id]) * 1000
        run.from_true_end_ms = (ready - start) * 1000 - item.speech_end_ms
        ends = [r for r in log.of(EndpointFinal) if r.turn_id == final.turn_id]
        if ends:
            quick_end = start + (ends[0].speech_end_ms + config.vad.quick_end_silence_ms) / 1000
            run.after_quick_end_ms = max(0.0, (ready - quick_end) * 1000)
    return run


def summarize(runs: Sequence[Run]) -> dict[str, Any]:
    """Per mode: p50/p95/max of each time, WER, utterances transcribed from agreed words."""
    out: dict[str, Any] = {}
    for mode in (True, False):
        mine = [r for r in runs if r.during_speech is mode]
        row: dict[str, Any] = {"items": len(mine)}
        for name in ("asr_ms", "from_true_end_ms", "after_quick_end_ms"):
            values = sorted(v for r in mine if (v := getattr(r, name)) is not None)
            row[name] = _stats(values)
        row["wer"] = round(100 * wer_counts((r.reference, r.heard) for r in mine).wer, 1)
        row["prefixed"] = sum(r.prefixed for r in mine)
        row["ready"] = sum(r.ready for r in mine)
        row["pass_running_at_pause"] = sum(r.pass_running for r in mine)
        row["missing"] = sum(not r.heard for r in mine)
        out["during_speech" if mode else "whole"] = row
    on, off = out["during_speech"], out["whole"]
    out["ratio_p50"] = _ratio(on["asr_ms"].get("p50"), off["asr_ms"].get("p50"))
    out["ratio_p95"] = _ratio(on["asr_ms"].get("p95"), off["asr_ms"].get("p95"))
    return out


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return {"p50": round(statistics.median(values), 1), "p95": round(p95, 1), "max": round(values[-1], 1)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


async def compare(items: Sequence[CorpusItem], engine: Transcriber, config: Config) -> dict[str, Any]:
    """Every item in both modes, alternating which goes first; the runs and their summary."""
    runs: list[Run] = []
    load = [os.getloadavg()[0]]
    for index, item in enumerate(items):
        order = (True, False) if index % 2 == 0 else (False, True)
        for mode in order:
            runs.append(await run_item(item, engine, config, mode))
    load.append(os.getloadavg()[0])
    return {"summary": summarize(runs), "load_1min": load, "runs": [r.__dict__ for r in runs]}
