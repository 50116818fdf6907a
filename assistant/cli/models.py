"""``assistant models list | pull | verify | rm``."""

from __future__ import annotations

import argparse

from assistant.cli.common import _config, _log_line, _model_dir
from assistant.errors import ConfigError


def _cmd_models(args: argparse.Namespace) -> int:
    from assistant import models

    config = _config(args)
    model_dir = _model_dir(config, args)
    manifest = models.load_manifest()
    names = args.names
    if not names and args.models_command == "pull":
        names = [config.asr.model, config.llm.model, config.tts.voice]
        if config.vad.turn_model:
            from assistant.engines import TURN_MODEL

            names.append(TURN_MODEL)
    unknown = [name for name in names if name not in manifest]
    if unknown:
        raise ConfigError(f"unknown model {unknown[0]!r}: choose one of {sorted(manifest)}")
    if args.models_command == "list":
        print(f"models in {model_dir}")
        for spec, status in models.list_models(model_dir, manifest):
            if not names or spec.name in names:
                size = f"{spec.size / 1e6:,.0f} MB" if spec.size else "?"
                print(f"  {spec.name:34} {spec.role:9} {status:8} {size:>9}  {spec.license}")
        return 0
    if args.models_command == "pull":
        for name in names:
            print(models.pull(manifest[name], model_dir, log=_log_line))
        return 0
    if args.models_command == "verify":
        failed = 0
        present = [s.name for s, status in models.list_models(model_dir, manifest) if status != "missing"]
        for name in names or present:
            problems = models.verify(manifest[name], model_dir)
            print(f"{name}: {'ok' if not problems else '; '.join(problems)}")
            failed += bool(problems)
        return 1 if failed else 0
    if not names:
        raise ConfigError("models rm needs the names of the models to remove")
    for name in names:
        removed = models.remove(manifest[name], model_dir)
        print(f"{name}: {'removed' if removed else 'not present'}")
    return 0
