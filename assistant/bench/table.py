"""What ``assistant bench`` prints and draws: the table of spans from the pipeline's ``speech_end``
and from the true end of speech, the groups (who answered, the noise, the rate, the pauses), and
the latency plot (matplotlib, an optional extra, imported only for ``--plot``)."""

from __future__ import annotations

from typing import Any

from assistant.bench.truth import SHOWN
from assistant.errors import ConfigError


def _cells(stats: dict[str, float] | None) -> str:
    if not stats or not stats.get("n"):
        return f"{'-':>6} {'-':>6} {'-':>6}"
    return f"{stats['p50']:6.0f} {stats['p95']:6.0f} {stats['max']:6.0f}"


def format_table(result: dict[str, Any]) -> str:
    """The human summary printed by ``assistant bench``."""
    pipe, true, base = result["pipeline"], result.get("pipeline_true", {}), result["baseline"]
    outcomes = result.get("missed_outcomes", {})
    lines = [
        f"{result['answered']}/{result['items']} items answered"
        + (f" ({len(result['cut_short'])} cut short by the next item)" if result.get("cut_short") else "")
        + (
            "; missed: " + ", ".join(f"{i} ({outcomes.get(i, '?')})" for i in result["missed"])
            if result["missed"]
            else ""
        ),
        "",
        f"{'':18} {'from speech_end':>20}   {'from the true end':>20}   {'baseline':>20}",
        f"{'span (ms)':18} {'p50':>6} {'p95':>6} {'max':>6}   {'p50':>6} {'p95':>6} {'max':>6}"
        f"   {'p50':>6} {'p95':>6} {'max':>6}",
    ]
    for span in (*SHOWN, "llm_reply", "tts_reply"):
        if not (pipe.get(span) or true.get(span) or base.get(span)):
            continue
        lines.append(
            f"{span:18} {_cells(pipe.get(span))}   {_cells(true.get(span))}   {_cells(base.get(span))}"
        )
    lag = result.get("lag", {})
    if lag.get("n"):
        lines.append(
            f"lag of speech_end after the true end: p5 {lag['p5']:.0f}, p50 {lag['p50']:.0f},"
            f" p95 {lag['p95']:.0f}, max {lag['max']:.0f} ms"
        )
    tps, wer, fallbacks = result["llm_tokens_per_s"], result["wer"], result["asr_fallbacks"]
    share = 100 * tps["pipeline"] / tps["alone"] if tps["alone"] else 0.0
    paused = result.get("paused", {"items": 0, "cut": 0, "cut_items": []})
    noise = result.get("noise_turns", {"turns": 0, "by_noise": {}})
    lines += [
        "",
        f"median e2e: baseline / pipeline = {result['e2e_median_ratio']:.2f}x"
        f" ({result.get('e2e_median_ratio_true', 0.0):.2f}x from the true end)",
        f"turns whose first audio missed the budget: {result['first_audio_over_budget']}"
        f" ({result.get('first_audio_over_budget_true', 0)} from the true end)",
        f"paused utterances cut in two: {paused['cut']} of {paused['items']}"
        + "".join(f"; {c['item']} heard {c['first_part_heard']!r}" for c in paused["cut_items"]),
        f"paused utterances answered whole after a false start (the first part's turn had begun to"
        f" play): {paused.get('false_starts', 0)}"
        + "".join(
            f"; {c['item']} heard {c['first_part_heard']!r}" for c in paused.get("false_start_items", [])
        ),
        f"turns started by noise alone: {noise['turns']}"
        + (
            f" ({', '.join(f'{k} {v}' for k, v in sorted(noise['by_noise'].items()))})"
            if noise["turns"]
            else ""
        ),
        f"WER: short window {wer['short_window']:.1f}%  full window {wer['full_window']:.1f}%",
        f"actions: {result['actions'] or 'none'}",
        f"acknowledgements: {result['acks']['played']} played, {result['acks']['needed']} needed"
        " (the answer was ready only after the budget)",
        f"ASR second passes (a wider window): {fallbacks['fallbacks']} of {fallbacks['calls']}"
        " transcriptions at the pause",
        f"LLM tokens/s: pipeline {tps['pipeline']:.1f}, alone {tps['alone']:.1f} ({share:.0f}%;"
        f" alone before the pipeline {tps['alone_before']:.1f}, after {tps['alone_after']:.1f});"
        f" {tps.get('pipeline_wall', tps['pipeline']):.1f} counting its waits for TTS",
        f"peak RSS: {result['peak_rss_mb']:.0f} MB",
        "",
        "from the true end (ms)    items  e2e p50    p95   first audio p95  over budget"
        "  endpointing p50  transcript p50   WER %",
    ]
    labelled = {"intent": "commands (intents)", "llm": "questions (LLM)"}
    groups = {**result.get("by_handler", {}), **result.get("by_condition", {})}
    for name, group in groups.items():
        spans = group["from_true_end"]

        def p(span: str, q: str, spans: dict[str, Any] = spans) -> str:
            return f"{spans[span][q]:.0f}" if span in spans and spans[span].get("n") else "-"

        wer_cell = "-" if group["wer"] is None else f"{group['wer']:.1f}"
        lines.append(
            f"{labelled.get(name, name):24} {group['answered']:3}/{group['items']:<3} {p('e2e', 'p50'):>7}"
            f" {p('e2e', 'p95'):>6} {p('first_audio', 'p95'):>16} {group['first_audio_over_budget_true']:>12}"
            f" {p('endpointing', 'p50'):>16} {p('transcript', 'p50'):>15} {wer_cell:>7}"
        )
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

    def values(key: str, span: str) -> list[float]:
        return [r[key][span] for r in items if r.get(key) and span in r[key]]

    boxes = [
        values("spans_true", "first_audio"), values("spans_true", "e2e"),
        values("spans", "e2e"), values("baseline", "e2e"),
    ]  # fmt: skip
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.boxplot(boxes, showfliers=True)
    ax.set_xticks(
        [1, 2, 3, 4],
        [
            "first audio\n(true end)",
            "e2e (answer)\n(true end)",
            "e2e (answer)\n(speech_end)",
            "sequential\nbaseline e2e",
        ],
    )
    ax.axhline(800, color="red", linestyle="--", linewidth=1, label="800 ms budget")
    ax.set_ylabel("ms after the end of speech")
    ax.set_title(f"{result['answered']} spoken utterances, same models, same run")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
