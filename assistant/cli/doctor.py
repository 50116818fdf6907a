"""``assistant doctor``: the machine's checks, with the run options they are given."""

from __future__ import annotations

import argparse
import logging

from assistant.cli.common import (
    LIVE_INPUTS,
    LIVE_OUTPUTS,
    _config,
    _live,
    _model_dir,
    _sink,
    _source,
    _with_mqtt,
)


async def _cmd_doctor(args: argparse.Namespace) -> int:
    import os
    import shlex

    from assistant.config import resolve_pipeline
    from assistant.doctor import Setup, effective_config, exit_code, format_config, run_checks, to_json
    from assistant.models.store import default_model_dir

    config = _with_mqtt(_config(args), args.mqtt)
    model_dir = _model_dir(config, args)
    given = {"--pipeline": args.pipeline if args.pipeline != "default" else None, "--mqtt": args.mqtt,
             "--model-dir": args.model_dir, "--input": args.input, "--output": args.output,
             "--report": args.report}  # fmt: skip
    if args.input is None and args.output is None and not config.mqtt.enabled:
        args.input, args.output = "mic", "speaker"  # what the service files run
    pipeline = resolve_pipeline(args.pipeline).resolve()
    pull = "assistant models pull"
    if model_dir != default_model_dir():
        pull = f"assistant --model-dir {shlex.quote(str(model_dir))} models pull"
    run_options = {"--input": args.input, "--output": args.output, "--report": args.report}
    setup = Setup(
        config=config,
        model_dir=model_dir,
        input=args.input,
        output=args.output,
        report=args.report,
        open_source=(lambda cb: _source(args, config, cb)) if _live(args.input, LIVE_INPUTS) else None,
        open_sink=(lambda cb: _sink(args.output, config, cb)) if _live(args.output, LIVE_OUTPUTS) else None,
        pull=pull,
        pipeline=pipeline,
        rows=effective_config(
            config, pipeline, model_dir=model_dir, given=given, environ=os.environ, run_options=run_options
        ),
    )
    audio_log = logging.getLogger("assistant.audio")
    level = audio_log.level
    if not args.verbose:  # a device that fails is a finding, not also a retry warning on stderr
        audio_log.setLevel(logging.ERROR)
    try:
        findings = await run_checks(setup)
    finally:
        audio_log.setLevel(level)
    if args.json:
        print(to_json(findings, setup, strict=args.strict))
        return exit_code(findings, strict=args.strict)
    for finding in findings:
        print(finding)
    if args.config or args.verbose:
        print(f"\nconfig (file: {pipeline}):\n{format_config(setup.rows)}")
    return exit_code(findings, strict=args.strict)
