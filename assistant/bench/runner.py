"""``assistant bench``: the spoken corpus through the real pipeline and a sequential baseline.

Both run in the same process, on the same loaded models, one after the other:

- *pipeline*: every item in one input stream, paced in real time, through the streaming
  pipeline with the chosen config (speculation, short-window ASR, acknowledgements...). The
  stream plays the noisy items first, in stretches of one noise that run on through the gaps
  (``stream.in_stretches``), and the clean ones last;
- *baseline*: per item, what a plain sequential assistant does: wait for the endpoint
  (``end_silence_ms`` of silence, no speculation), transcribe on Whisper's full 30 s window,
  generate the whole reply, synthesize it all, then play. Its e2e is the sum of those times.

Prints a table (``table``) and returns a JSON-able dict: per span p5/p50/p95/max from the
pipeline's ``speech_end`` and from where speech truly ends in the corpus item (``truth``), the
lag between the two, the baseline's spans and the ratio of medians, WER of the short window
against the full window, paused utterances cut in two, how often each budget action fired, peak
RSS, and LLM tokens/s inside the pipeline against the same engine alone. The same figures per
group: who answered (the intents stage or the LLM, ``by_handler``) and the item's condition
(clean, each noise kind and SNR, each rate, paused; ``by_condition``). The corpus's devices are
declared where the config lacks them, and timers go to a temporary file.

The engine alone runs twice, right before and right after the pipeline, and its figure is the
mean of the two: a shared machine's speed drifts by several percent within minutes, and passes
on both sides of the pipeline's cancel that drift out. Before, it answers the first
``ALONE_CONVERSATIONS`` items as written (the transcripts are not known yet); after, it replays
as many of the pipeline's own conversations (the same prompts and history, so the same context
lengths).
"""

from __future__ import annotations

import asyncio
import resource
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from assistant.bench import truth
from assistant.bench.table import format_table, plot, pyplot
from assistant.config import Config, LlmConfig
from assistant.contracts import ChatEngine, ChatMessage
from assistant.daemon import Daemon
from assistant.engines import Engines, load_engines
from assistant.errors import ConfigError
from assistant.pipeline import Pipeline
from assistant.turn.latency import TurnRecord, span_stats

__all__ = ["ItemResult", "TimedChat", "format_table", "plot", "pyplot", "run_bench"]

ALONE_CONVERSATIONS = 16
"""Conversations the LLM answers alone before the pipeline, and replays after it: enough for a
steady tokens/s, few enough to keep the bench short on a large corpus."""


class TimedChat(ChatEngine):
    """Wraps a chat engine; counts calls and records, per finished reply, its messages, the
    tokens after the first, the seconds after the first, and the seconds of those the engine
    stood aside for speech synthesis (its ``yielded_s``, see ``engines.share``). Every ability the
    engine declares (``contracts.ChatEngine``) is passed through, so the pipeline uses the engine
    exactly as the daemon does."""

    def __init__(self, inner: ChatEngine) -> None:
        self.inner = inner
        self.samples: list[tuple[list[dict[str, str]], int, float, float]] = []
        self.calls = 0
        self.history_tokens = inner.history_tokens

    @property
    def thinks(self) -> bool:
        return self.inner.thinks

    @property
    def template_opens_think(self) -> bool:
        return self.inner.template_opens_think

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def prime(self, messages: list[ChatMessage]) -> int:
        return self.inner.prime(messages)

    def reconfigure(self, config: LlmConfig) -> None:
        self.inner.reconfigure(config)

    def chat(
        self,
        messages: list[ChatMessage],
        on_token: Callable[[str], None],
        stop: threading.Event | None = None,
        *,
        prefill: str = "",
        steer: Callable[[], str | None] | None = None,
    ) -> str:
        """The engine's ``chat``, timed."""
        self.calls += 1
        first: float | None = None
        count = 0

        def counted(piece: str) -> None:
            nonlocal first, count
            if first is None:
                first = time.perf_counter()
            count += 1
            on_token(piece)

        finish = self.inner.chat(messages, counted, stop, prefill=prefill, steer=steer)
        if first is not None and count > 1 and finish != "cancelled":
            seconds, yielded = time.perf_counter() - first, self.inner.yielded_s
            self.samples.append(([dict(m) for m in messages], count - 1, seconds, yielded))
        return finish

    def tokens_per_s(self) -> float:
        """Tokens per second of generating (time spent standing aside for synthesis excluded)."""
        tokens = sum(n for _, n, _, _ in self.samples)
        seconds = sum(s - y for _, _, s, y in self.samples)
        return tokens / seconds if seconds > 0 else 0.0

    def wall_tokens_per_s(self) -> float:
        """Tokens per second from the first token to the last, waits included."""
        tokens = sum(n for _, n, _, _ in self.samples)
        seconds = sum(s for _, _, s, _ in self.samples)
        return tokens / seconds if seconds > 0 else 0.0


@dataclass
class ItemResult:
    """One corpus item through both paths."""

    item_id: str
    reference: str
    heard: str = ""
    """Pipeline transcript (the configured ASR window)."""
    heard_full: str = ""
    """Baseline transcript (the full 30 s window)."""
    spans: dict[str, float] | None = None
    """The answer's spans from the pipeline's ``speech_end`` (``truth.vad_spans``)."""
    spans_true: dict[str, float] | None = None
    """The same from where speech truly ends in the item, and the ``lag`` (``truth.true_spans``)."""
    actions: tuple[str, ...] = ()
    answer_ready: float | None = None
    """When the answer's audio was ready, ms after the end of speech (before any acknowledgement)."""
    baseline: dict[str, float] | None = None
    handled_by: str = ""
    """``intent`` (a command, answered without the LLM) or ``llm``."""
    intent: str | None = None
    voice: str = ""
    rate: str = "normal"
    noise: str = "clean"
    snr_db: float | None = None
    command: bool = False
    """Meant for the intents stage (``handled_by`` says who answered)."""
    paused: bool = False
    cut: bool = False
    """A paused utterance whose first part was taken for the whole (a turn committed in the pause)."""
    false_start: bool = False
    """A paused utterance answered whole, but only after the first part's turn had begun to play
    (it was continued by the second part: ``truth.false_start``)."""
    cut_transcript: str = ""
    """What the cut (or false-started) turn heard."""
    outcome: str = "unheard"
    """The answered turn's outcome, or, when none answered, that of the item's turn (``cancelled``:
    the next turn barged in before the answer began), or ``unheard`` (no turn)."""


def pick_items(items: list[Any], every_variant: bool) -> list[Any]:
    """All variants, or the first take (variant 0) of each utterance, in the corpus's order."""
    return list(items) if every_variant else [item for item in items if item.variant == 0]


async def run_pipeline(config: Config, engines: Engines, stream: bytes) -> tuple[Pipeline, list[TurnRecord]]:
    from assistant.audio.sinks import MemorySink
    from assistant.audio.sources import PcmSource

    records: list[TurnRecord] = []
    pipeline = Pipeline(config, engines, MemorySink(), on_turn=records.append)
    await Daemon(pipeline).run(PcmSource(stream, config.input))
    return pipeline, records


def endpoint_wait_ms(config: Config, pcm: bytes) -> float:
    """How long the endpointer waits after speech on this item, without speculation."""
    from assistant.messages import AudioIn
    from assistant.stages.vad import VadStage
    from assistant.turn.reports import EndpointFinal, ReportLog

    vad_config = replace(config.vad, speculate_after_ms=0)
    log = ReportLog()
    vad = VadStage(vad_config, log)
    vad.feed(AudioIn(pcm + bytes(2 * 16 * (vad_config.end_silence_ms + 200)), 0.0))
    vad.finish()
    waits = [r.endpoint_ms - r.speech_end_ms for r in log.of(EndpointFinal)]
    return waits[0] if waits else float(vad_config.end_silence_ms)


def baseline_item(
    config: Config, engines: Engines, full_asr: Any, pcm: bytes
) -> tuple[str, dict[str, float]]:
    """The sequential assistant on one item: returns its transcript and its span times (ms)."""
    from assistant.text.speakable import clean_for_speech

    assert engines.llm is not None and engines.tts is not None
    spans = {"endpointing": endpoint_wait_ms(config, pcm)}
    start = time.perf_counter()
    heard = full_asr.transcribe(pcm).text
    spans["asr"] = (time.perf_counter() - start) * 1000
    pieces: list[str] = []
    start = time.perf_counter()
    messages = [{"role": "system", "content": config.llm.system_prompt}, {"role": "user", "content": heard}]
    engines.llm.chat(messages, pieces.append)
    spans["llm_reply"] = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    parts: list[bytes] = []
    text = clean_for_speech("".join(pieces)) or "Sorry."
    engines.tts.synthesize(text, parts.append)
    spans["tts_reply"] = (time.perf_counter() - start) * 1000
    spans["e2e"] = spans["first_audio"] = sum(
        spans[k] for k in ("endpointing", "asr", "llm_reply", "tts_reply")
    )
    return heard, spans


def llm_alone_tokens_per_s(engine: Any, conversations: list[list[dict[str, str]]]) -> float:
    """The engine alone (nothing else running) on the same conversations, in the same order:
    the same prompts, history and context lengths as inside the pipeline."""
    timed = TimedChat(engine)
    for messages in conversations:
        timed.chat(messages, lambda _p: None)
    return timed.tokens_per_s()


def bench_stream(
    model_dir: Path,
    every_variant: bool = False,
    limit: int | None = None,
    gap_ms: float = 4000.0,
    corpus: list[Any] | None = None,
) -> tuple[list[Any], bytes, list[Any]]:
    """The bench's items in the order it plays them, its input stream (16 kHz int16) and where
    each item lies in it (``bench --write-stream`` writes the stream out)."""
    from assistant.bench.corpus import bench_corpus, make_stream
    from assistant.bench.stream import in_stretches

    picked = pick_items(corpus if corpus is not None else bench_corpus(model_dir), every_variant)[:limit]
    items = in_stretches(picked)
    stream, positions = make_stream(items, gap_ms=gap_ms)
    return items, stream, positions


def run_bench(
    config: Config,
    model_dir: Path,
    *,
    every_variant: bool = False,
    limit: int | None = None,
    gap_ms: float = 4000.0,
    log: Callable[[str], None] = lambda _line: None,
    corpus: list[Any] | None = None,
) -> dict[str, Any]:
    """Run the bench on ``corpus`` (default: the bench corpus built from ``model_dir``)."""
    from assistant.bench.wer import wer_counts
    from assistant.engines.whisper import WhisperEngine
    from assistant.models.store import resolve

    config = with_devices(replace(config, input=replace(config.input, realtime=True)))
    log("loading models and the corpus")
    engines = load_engines(config, model_dir)
    full_asr = WhisperEngine(resolve(config.asr.model, "asr", model_dir), replace(config.asr, window="full"))
    items, stream, positions = bench_stream(model_dir, every_variant, limit, gap_ms, corpus)
    log("the LLM alone, before the pipeline")
    system = {"role": "system", "content": config.llm.system_prompt}
    before = llm_alone_tokens_per_s(
        engines.llm, [[system, {"role": "user", "content": i.text}] for i in items[:ALONE_CONVERSATIONS]]
    )
    if engines.llm is None:
        raise ConfigError("the bench needs an LLM engine")
    timed = TimedChat(engines.llm)
    log(f"pipeline: {len(items)} items, {len(stream) / 32000:.0f} s of audio in real time")
    with tempfile.TemporaryDirectory(prefix="bench-timers-") as state:
        intents = replace(config.intents, timers_file=str(Path(state) / "timers.json"))
        pipe_engines = replace(engines, llm=timed)  # the turn model and the wake word too
        pipeline, records = asyncio.run(run_pipeline(replace(config, intents=intents), pipe_engines, stream))
    results = [
        ItemResult(
            item.id, item.text, voice=item.voice, rate=item.rate, noise=item.noise, snr_db=item.snr_db,
            command=item.command, paused=item.pause_start_ms is not None,
        )
        for item in items
    ]  # fmt: skip
    for pos, result, found in zip(positions, results, truth.match(records, positions), strict=True):
        result.outcome = found.outcome
        if found.cuts:
            result.cut, result.cut_transcript = True, found.cuts[0].transcript
        elif found.false_starts:
            result.false_start, result.cut_transcript = True, found.false_starts[0].transcript
        rec = found.answer
        if rec is None:
            continue
        end = rec.marks["speech_end"]
        result.heard, result.actions = rec.transcript, tuple(rec.actions)
        result.spans, result.spans_true = (
            truth.vad_spans(rec.marks),
            truth.true_spans(rec.marks, pos.speech_end_ms),
        )
        result.handled_by, result.intent = rec.handled_by, rec.intent
        if rec.answer_ready_ms is not None:
            result.answer_ready = round(rec.answer_ready_ms - end, 1)
    log("the LLM alone, after the pipeline")
    after = llm_alone_tokens_per_s(
        engines.llm, [messages for messages, *_ in timed.samples][:ALONE_CONVERSATIONS]
    )
    log("baseline: the same items, sequentially")
    for item, result in zip(items, results, strict=True):
        result.heard_full, result.baseline = baseline_item(config, engines, full_asr, item.pcm)
    answered = [r for r in results if r.spans is not None]
    budget = config.latency.budget_ms
    whole = truth.group_report(results, budget)
    base_stats = span_stats([r.baseline for r in results if r.baseline])
    for extra in ("llm_reply", "tts_reply"):
        base_stats[extra] = truth.stats([r.baseline[extra] for r in results if r.baseline])
    short = wer_counts((r.reference, r.heard) for r in answered)
    full = wer_counts((r.reference, r.heard_full) for r in answered)
    pipe_stats, true_stats = whole["from_speech_end"], whole["from_true_end"]
    ratio = base_stats["e2e"]["p50"] / pipe_stats["e2e"]["p50"] if "e2e" in pipe_stats else 0.0
    ratio_true = base_stats["e2e"]["p50"] / true_stats["e2e"]["p50"] if "e2e" in true_stats else 0.0
    groups = truth.groups(results, budget)
    return {
        "items": len(items),
        "answered": len(answered),
        "missed": [r.item_id for r in results if r.spans is None],
        "missed_outcomes": {r.item_id: r.outcome for r in results if r.spans is None},
        "cut_short": [r.item_id for r in answered if r.outcome != "answered"],
        "pipeline": pipe_stats,
        "pipeline_true": true_stats,
        "lag": truth.stats([r.spans_true["lag"] for r in answered if r.spans_true and "lag" in r.spans_true]),
        "baseline": base_stats,
        "e2e_median_ratio": round(ratio, 2),
        "e2e_median_ratio_true": round(ratio_true, 2),
        "first_audio_over_budget": whole["first_audio_over_budget"],
        "first_audio_over_budget_true": whole["first_audio_over_budget_true"],
        "paused": truth.paused_report(results),
        "noise_turns": truth.noise_turns(records, positions, [item.noise for item in items]),
        "wer": {
            "short_window": round(100 * short.wer, 2),
            "full_window": round(100 * full.wer, 2),
            "by_group": {name: group["wer"] for name, group in groups.items()},
        },
        "actions": dict(pipeline.tracker.actions),
        "acks": ack_counts(answered, budget),
        "by_handler": {who: groups.get(who, truth.group_report([], budget)) for who in ("intent", "llm")},
        "by_condition": {name: group for name, group in groups.items() if name not in ("intent", "llm")},
        "asr_fallbacks": {
            "calls": engines.asr.calls if engines.asr is not None else 0,
            "fallbacks": engines.asr.fallbacks if engines.asr is not None else 0,
        },
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "llm_tokens_per_s": {
            "pipeline": round(timed.tokens_per_s(), 1),
            "pipeline_wall": round(timed.wall_tokens_per_s(), 1),
            "alone": round((before + after) / 2, 1),
            "alone_before": round(before, 1),
            "alone_after": round(after, 1),
        },
        "per_item": [r.__dict__ | {"actions": list(r.actions)} for r in results],
    }


def with_devices(config: Config) -> Config:
    """The config with the corpus's devices declared, where it has none of those names."""
    from assistant.bench.corpus import DEVICES

    names = {name.lower() for device in config.devices for name in device.names}
    extra = tuple(d for d in DEVICES if not names & {n.lower() for n in d.names})
    return replace(config, devices=config.devices + extra)


def ack_counts(answered: list[ItemResult], budget_ms: float) -> dict[str, int]:
    """Acknowledgements played, and how many of them were needed: the answer itself was ready
    only after the budget (an unneeded one delayed an answer that would have been in time)."""
    acked = [r for r in answered if "ack_played" in r.actions]
    needed = sum(r.answer_ready is None or r.answer_ready > budget_ms for r in acked)
    return {"played": len(acked), "needed": needed}
