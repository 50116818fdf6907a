"""Command line: ``assistant run | ask | say | transcribe | models``.

The only package that prints. Errors print ``error [code]: message`` and exit 2.

``main`` dispatches; ``parser`` holds the arguments, ``common`` what the commands share (the config
with the command line's overrides, the model folder, the audio source and sink), and one module per
command or group: ``run``, ``oneshot`` (ask, say, transcribe, devices, pipelines), ``doctor``,
``bench``, ``models``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from assistant.cli.bench import _cmd_bench
from assistant.cli.common import _config, _with_mqtt, _with_wyoming
from assistant.cli.doctor import _cmd_doctor
from assistant.cli.models import _cmd_models
from assistant.cli.oneshot import _cmd_ask, _cmd_devices, _cmd_pipelines, _cmd_say, _cmd_transcribe
from assistant.cli.parser import build_parser
from assistant.cli.run import _cmd_run
from assistant.errors import AssistantError

__all__ = ["_config", "_with_mqtt", "_with_wyoming", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    from assistant.service import allocator, threads

    allocator.tune()  # ASSISTANT_ALLOCATOR=lean: freed memory given back (service/allocator.py)
    threads.passive_waits()  # OpenMP's idle threads sleep (service/threads.py)
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    commands = {"run": _cmd_run, "ask": _cmd_ask, "say": _cmd_say, "transcribe": _cmd_transcribe,
                "doctor": _cmd_doctor}  # fmt: skip
    try:
        if args.command == "models":
            return _cmd_models(args)
        if args.command == "bench":
            return _cmd_bench(args)
        if args.command == "devices":
            return _cmd_devices(args)
        if args.command == "pipelines":
            return _cmd_pipelines(args)
        return asyncio.run(commands[args.command](args))
    except AssistantError as err:
        print(f"error [{err.code}]: {err.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
