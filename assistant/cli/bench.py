"""``assistant bench``: the latency bench, the wake word's, the echo bench, the soak, the bench's stream."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from assistant.cli.common import _config, _log_line, _model_dir, _with_mqtt


def _cmd_bench(args: argparse.Namespace) -> int:
    from assistant.bench.runner import format_table, plot, pyplot, run_bench

    if args.plot:
        pyplot()  # before a run of minutes, not after it
    config = _config(args)
    model_dir = _model_dir(config, args)
    if args.wake_bench:
        from assistant.bench.wake import format_wake, run_wake_bench

        return _report(run_wake_bench(model_dir, limit=args.limit, log=_log_line), format_wake, args.json)
    if args.echo_bench:
        from assistant.bench.echo import format_echo, run_echo_bench

        return _report(run_echo_bench(model_dir, limit=args.limit, log=_log_line), format_echo, args.json)
    if args.write_stream:
        import wave

        from assistant.bench.runner import bench_stream

        items, stream, _ = bench_stream(model_dir, args.all, args.limit, args.gap_ms)
        with wave.open(args.write_stream, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16_000)
            out.writeframes(stream)
        print(f"{args.write_stream}: {len(items)} items, {len(stream) / 32_000:.1f} s")
        return 0
    if args.soak:
        from assistant.bench.soak import format_soak, run_soak

        soak = run_soak(
            _with_mqtt(config, args.mqtt), model_dir, turns=args.soak, mqtt=bool(args.mqtt), log=_log_line
        )
        _report(soak, format_soak, args.json)
        return 0 if soak["ok"] else 1
    result = run_bench(
        config, model_dir, every_variant=args.all, limit=args.limit, gap_ms=args.gap_ms, log=_log_line
    )
    _report(result, format_table, args.json)
    if args.plot:
        plot(result, args.plot)
    return 0


def _report(result: dict[str, Any], table: Callable[[dict[str, Any]], str], json_path: str | None) -> int:
    """Print a bench's table, and write its result as JSON where asked."""
    print(table(result))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0
