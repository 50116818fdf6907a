"""``assistant bench``: the spoken corpus through the real pipeline and a sequential baseline.

Both run in the same process, on the same loaded models, one after the other:

- *pipeline*: every item in one input stream, paced in real time, through the streaming
  pipeline with the chosen config (speculation, short-window ASR, acknowledgements...);
- *baseline*: per item, what a plain sequential assistant does: wait for the endpoint
  (``end_silence_ms`` of silence, no speculation), transcribe on Whisper's full 30 s window,
  generate the whole reply, synthesize it all, then play. Its e2e is the sum of those times.

Prints a table and returns a JSON-able dict: per span p50/p95/max for both and the ratio of
medians, WER of the short window against the full window, how often each budget action fired,
peak RSS, and LLM tokens/s inside the pipeline against the same engine alone. Turns answered by
the intents stage (the corpus's commands: no LLM on their path) are also reported apart from the
LLM's, with their e2e from where speech truly ends in the corpus (``by_handler``). The corpus's
devices are declared where the config lacks them, and timers go to a temporary file.

The engine alone runs twice, right before and right after the pipeline, and its figure is the
mean of the two: a shared machine's speed drifts by several percent within minutes, and passes
on both sides of the pipeline's cancel that drift out. Before, it answers the corpus's questions
as written (the transcripts are not known yet); after, it replays the pipeline's own
conversations (the same prompts and history, so the same context lengths).
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

from assistant.config import Config, LlmConfig
from assistant.contracts import ChatEngine, ChatMessage
from assistant.daemon import Daemon
from assistant.engines import Engines, load_engines
from assistant.errors import ConfigError
from assistant.pipeline import Pipeline
from assistant.turn.latency import TurnRecord, percentile, span_stats

SHOWN_SPANS = ("e2e", "first_audio", "endpointing", "asr", "llm_first_token", "tts_first_audio")


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
    actions: tuple[str, ...] = ()
    answer_ready: float | None = None
    """When the answer's audio was ready, ms after the end of speech (before any acknowledgement)."""
    baseline: dict[str, float] | None = None
    handled_by: str = ""
    """``intent`` (a command, answered without the LLM) or ``llm``."""
    intent: str | None = None
    e2e_true: float | None = None
    """First answer audio, ms after where speech truly ends in the corpus item."""


def pick_items(items: list[Any], every_variant: bool) -> list[Any]:
    """All variants, or each question once: voices in turn, every other one with noise."""
    if every_variant:
        return items
    by_question: dict[str, list[Any]] = {}
    for item in items:
        by_question.setdefault(item.text, []).append(item)
    chosen = []
    for index, variants in enumerate(by_question.values()):
        voices = sorted({v.voice for v in variants})
        voice = voices[index % len(voices)]
        noisy = index % 2 == 1
        matching = [v for v in variants if v.voice == voice and (v.snr_db is not None) == noisy]
        chosen.append((matching or variants)[0])
    return chosen


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
    """Run the bench on ``corpus`` (default: the spoken corpus built from ``model_dir``)."""
    from assistant.bench.corpus import build_corpus, make_stream
    from assistant.bench.wer import wer_counts
    from assistant.engines.whisper import WhisperEngine
    from assistant.models.store import resolve

    config = with_devices(replace(config, input=replace(config.input, realtime=True)))
    log("loading models and the corpus")
    engines = load_engines(config, model_dir)
    full_asr = WhisperEngine(resolve(config.asr.model, "asr", model_dir), replace(config.asr, window="full"))
    items = pick_items(corpus if corpus is not None else build_corpus(model_dir), every_variant)[:limit]
    stream, positions = make_stream(items, gap_ms=gap_ms)
    log("the LLM alone, before the pipeline")
    system = {"role": "system", "content": config.llm.system_prompt}
    before = llm_alone_tokens_per_s(
        engines.llm, [[system, {"role": "user", "content": i.text}] for i in items]
    )
    if engines.llm is None:
        raise ConfigError("the bench needs an LLM engine")
    timed = TimedChat(engines.llm)
    log(f"pipeline: {len(items)} items, {len(stream) / 32000:.0f} s of audio in real time")
    with tempfile.TemporaryDirectory(prefix="bench-timers-") as state:
        intents = replace(config.intents, timers_file=str(Path(state) / "timers.json"))
        pipe_engines = Engines(engines.asr, timed, engines.tts)
        pipeline, records = asyncio.run(run_pipeline(replace(config, intents=intents), pipe_engines, stream))
    results = [ItemResult(item.id, item.text) for item in items]
    for rec in records:
        end = rec.marks.get("speech_end", -1.0)
        for pos, result in zip(positions, results, strict=True):
            if (
                pos.start_ms <= end <= pos.end_ms + gap_ms
                and result.spans is None
                and rec.outcome == "answered"
            ):
                result.heard, result.spans, result.actions = rec.transcript, rec.spans(), tuple(rec.actions)
                result.handled_by, result.intent = rec.handled_by, rec.intent
                if rec.answer_ready_ms is not None:
                    result.answer_ready = round(rec.answer_ready_ms - end, 1)
                if "first_answer_audio" in rec.marks:
                    result.e2e_true = round(rec.marks["first_answer_audio"] - pos.speech_end_ms, 1)
                break
    log("the LLM alone, after the pipeline")
    after = llm_alone_tokens_per_s(engines.llm, [messages for messages, *_ in timed.samples])
    log("baseline: the same items, sequentially")
    for item, result in zip(items, results, strict=True):
        result.heard_full, result.baseline = baseline_item(config, engines, full_asr, item.pcm)
    answered = [r for r in results if r.spans is not None]
    pipe_stats = span_stats([r.spans for r in answered if r.spans])
    base_stats = span_stats([r.baseline for r in results if r.baseline])
    for extra in ("llm_reply", "tts_reply"):
        values = [r.baseline[extra] for r in results if r.baseline]
        base_stats[extra] = {
            "n": len(values),
            "p50": round(percentile(values, 50), 1),
            "p95": round(percentile(values, 95), 1),
            "max": round(max(values), 1),
        }
    short = wer_counts((r.reference, r.heard) for r in answered)
    full = wer_counts((r.reference, r.heard_full) for r in answered)
    ratio = base_stats["e2e"]["p50"] / pipe_stats["e2e"]["p50"] if "e2e" in pipe_stats else 0.0
    first_audio = [r.spans["first_audio"] for r in answered if r.spans and "first_audio" in r.spans]
    return {
        "items": len(items),
        "answered": len(answered),
        "missed": [r.item_id for r in results if r.spans is None],
        "pipeline": pipe_stats,
        "baseline": base_stats,
        "e2e_median_ratio": round(ratio, 2),
        "first_audio_over_budget": sum(v > config.latency.budget_ms for v in first_audio),
        "wer": {"short_window": round(100 * short.wer, 2), "full_window": round(100 * full.wer, 2)},
        "actions": dict(pipeline.tracker.actions),
        "acks": ack_counts(answered, config.latency.budget_ms),
        "by_handler": by_handler(answered),
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


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 1),
        "p95": round(percentile(values, 95), 1),
        "max": round(max(values), 1),
    }


def by_handler(answered: list[ItemResult]) -> dict[str, dict[str, Any]]:
    """Turns answered by a command (``intent``) apart from the LLM's: how many, which intents,
    and their e2e, from the pipeline's ``speech_end`` and from the true end of speech."""
    out: dict[str, dict[str, Any]] = {}
    for who in ("intent", "llm"):
        turns = [r for r in answered if r.handled_by == who]
        out[who] = {
            "turns": len(turns),
            "e2e": _stats([r.spans["e2e"] for r in turns if r.spans and "e2e" in r.spans]),
            "e2e_true": _stats([r.e2e_true for r in turns if r.e2e_true is not None]),
        }
        if who == "intent":
            out[who]["intents"] = sorted({r.intent for r in turns if r.intent})
    return out


def ack_counts(answered: list[ItemResult], budget_ms: float) -> dict[str, int]:
    """Acknowledgements played, and how many of them were needed: the answer itself was ready
    only after the budget (an unneeded one delayed an answer that would have been in time)."""
    acked = [r for r in answered if "ack_played" in r.actions]
    needed = sum(r.answer_ready is None or r.answer_ready > budget_ms for r in acked)
    return {"played": len(acked), "needed": needed}


def format_table(result: dict[str, Any]) -> str:
    """The human summary printed by ``assistant bench``."""
    pipe, base = result["pipeline"], result["baseline"]
    lines = [
        f"{result['answered']}/{result['items']} items answered"
        + (f"; missed: {', '.join(result['missed'])}" if result["missed"] else ""),
        "",
        f"{'span (ms)':18} {'pipeline p50':>12} {'p95':>8} {'max':>8}   "
        f"{'baseline p50':>12} {'p95':>8} {'max':>8}",
    ]
    for span in (*SHOWN_SPANS, "llm_reply", "tts_reply"):
        p, b = pipe.get(span), base.get(span)
        if p is None and b is None:
            continue
        left = f"{p['p50']:12.0f} {p['p95']:8.0f} {p['max']:8.0f}" if p else f"{'-':>12} {'-':>8} {'-':>8}"
        right = f"{b['p50']:12.0f} {b['p95']:8.0f} {b['max']:8.0f}" if b else f"{'-':>12} {'-':>8} {'-':>8}"
        lines.append(f"{span:18} {left}   {right}")
    tps, wer, fallbacks = result["llm_tokens_per_s"], result["wer"], result["asr_fallbacks"]
    share = 100 * tps["pipeline"] / tps["alone"] if tps["alone"] else 0.0
    lines += [
        "",
        f"median e2e: baseline / pipeline = {result['e2e_median_ratio']:.2f}x",
        f"turns whose first audio missed the budget: {result['first_audio_over_budget']}",
        f"WER: short window {wer['short_window']:.1f}%  full window {wer['full_window']:.1f}%",
        f"actions: {result['actions'] or 'none'}",
        f"acknowledgements: {result['acks']['played']} played, {result['acks']['needed']} needed"
        " (the answer was ready only after the budget)",
        f"ASR fallbacks to the full window: {fallbacks['fallbacks']} of {fallbacks['calls']} pipeline calls",
        f"LLM tokens/s: pipeline {tps['pipeline']:.1f}, alone {tps['alone']:.1f} ({share:.0f}%;"
        f" alone before the pipeline {tps['alone_before']:.1f}, after {tps['alone_after']:.1f});"
        f" {tps.get('pipeline_wall', tps['pipeline']):.1f} counting its waits for TTS",
        f"peak RSS: {result['peak_rss_mb']:.0f} MB",
    ]
    for who, label in (("intent", "commands (intents, no LLM)"), ("llm", "questions (LLM)")):
        part = result.get("by_handler", {}).get(who)
        if part is None:
            continue
        true, mark = part["e2e_true"], part["e2e"]
        figures = (
            f"e2e p50 {true['p50']:.0f} ms, p95 {true['p95']:.0f}, max {true['max']:.0f} from the true end"
            f" of speech ({mark['p50']:.0f} ms from the pipeline's speech_end)"
            if true.get("n") and mark.get("n")
            else "no e2e"
        )
        lines.append(f"{label}: {part['turns']} turns; {figures}")
    return "\n".join(lines)


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend; a ``config_invalid`` error naming the extra when it
    is not installed (``assistant bench`` asks before its run, not after)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ConfigError("--plot needs matplotlib: pip install 'assistant[bench]'") from err
    return plt


def plot(result: dict[str, Any], path: str) -> None:
    """Latency distributions of the pipeline and the baseline, side by side, as a PNG."""
    plt = pyplot()
    items = result["per_item"]
    pipe = [r["spans"]["e2e"] for r in items if r["spans"] and "e2e" in r["spans"]]
    first = [r["spans"]["first_audio"] for r in items if r["spans"] and "first_audio" in r["spans"]]
    base = [r["baseline"]["e2e"] for r in items if r["baseline"]]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.boxplot([first, pipe, base], showfliers=True)
    ax.set_xticks([1, 2, 3], ["pipeline\nfirst audio", "pipeline\ne2e (answer)", "sequential\nbaseline e2e"])
    ax.axhline(800, color="red", linestyle="--", linewidth=1, label="800 ms budget")
    ax.set_ylabel("ms after the end of speech")
    ax.set_title(f"{result['answered']} spoken questions, same models, same run")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
