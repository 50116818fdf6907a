"""``assistant doctor``: checks of a deployment, each finding with a fix a user can act on.

A check is an ``async (Setup) -> list[Finding]``, registered by name in ``CHECKS``; ``Setup``
holds the config and how ``run`` would be started (``--input``, ``--output``, ``--report``,
the model folder). A finding's ``level`` is ``ok``, ``warn`` or ``fail``; ``doctor`` exits 1 when
something needed is broken (a ``fail``), and with ``--strict`` on a ``warn`` too (``exit_code``). The checks:

- ``models`` (``files.py``): every model the config needs is present and hashes right;
- ``wake`` (``wake.py``): in wake mode, the wake word model loads (or what the daemon falls back to);
- ``input``/``output``/``permissions`` (``audio.py``): a 0.5 s capture from the microphone with its
  level, the speaker opened, ALSA device access where PortAudio opens devices itself;
- ``processing`` (``processing.py``): WebRTC's audio processing (the ``aec`` extra) loads and runs,
  and what it will do to this input and output;
- ``dirs`` (``files.py``): the folders the daemon writes take a new file;
- ``broker``/``mqtt`` (``broker.py``): a real connection, and the broker's exposure.

``effective_config`` lists every setting with where it came from (``doctor --config``).
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from assistant.config import Config, config_sources
from assistant.doctor.audio import check_input, check_output, check_permissions
from assistant.doctor.base import LEVELS, Check, ConfigRow, Finding, Setup
from assistant.doctor.broker import accepts_anonymous, check_broker, check_exposure, check_mqtt, is_loopback
from assistant.doctor.files import check_dirs, check_models
from assistant.doctor.processing import check_processing
from assistant.doctor.wake import check_wake

CHECKS: dict[str, Check] = {
    "models": check_models,
    "wake": check_wake,
    "input": check_input,
    "output": check_output,
    "permissions": check_permissions,
    "processing": check_processing,
    "dirs": check_dirs,
    "broker": check_broker,
    "mqtt": check_exposure,
}
"""Every check ``doctor`` runs, by name, in order."""

MQTT_URL_KEYS = ("enabled", "host", "port", "tls", "username", "password")
"""The keys ``--mqtt URL`` replaces (``mqtt_protocol.config_from_url``)."""
SECRET_KEYS = frozenset({"mqtt.password", "llm.api_key"})


async def run_checks(setup: Setup | Config, checks: dict[str, Check] | None = None) -> list[Finding]:
    """Run every check; one that raises becomes a ``fail`` finding."""
    if isinstance(setup, Config):
        setup = Setup(config=setup)
    findings: list[Finding] = []
    for name, check in (checks or CHECKS).items():
        try:
            findings.extend(await check(setup))
        except (asyncio.CancelledError, TimeoutError):
            raise
        except Exception as err:
            findings.append(Finding(name, "fail", f"the check itself failed: {err!r}"))
    return findings


def exit_code(findings: list[Finding], *, strict: bool = False) -> int:
    """1 when a finding fails (or, ``strict``, warns); 0 otherwise."""
    bad = ("warn", "fail") if strict else ("fail",)
    return 1 if any(f.level in bad for f in findings) else 0


def effective_config(
    config: Config,
    pipeline: Path,
    *,
    model_dir: Path,
    given: Mapping[str, str | None],
    environ: Mapping[str, str],
    run_options: Mapping[str, str | None] | None = None,
) -> tuple[ConfigRow, ...]:
    """Every setting with its source: ``default``, ``file`` (``pipeline``), ``env NAME``, ``cli --OPTION``.

    ``given``: the command-line options, by name (``--mqtt``, ``--model-dir``, ``--pipeline``), None
    when absent. ``run_options``: ``--input``/``--output``/``--report`` as ``run`` would get them.
    """
    data = tomllib.loads(pipeline.read_text(encoding="utf-8"))  # already validated by load_config
    overrides: dict[str, str] = {}
    if given.get("--mqtt"):
        overrides.update({f"mqtt.{key}": "cli --mqtt" for key in MQTT_URL_KEYS})
    if given.get("--model-dir"):
        overrides["model_dir"] = "cli --model-dir"
    elif not config.model_dir:
        env = next((v for v in ("ASSISTANT_MODEL_DIR", "XDG_CACHE_HOME") if environ.get(v)), None)
        overrides["model_dir"] = f"env {env}" if env else "default"
    rows = [ConfigRow("pipeline", str(pipeline), "cli --pipeline" if given.get("--pipeline") else "default")]
    for option, value in (run_options or {}).items():
        rows.append(ConfigRow(option.lstrip("-"), value, f"cli {option}" if given.get(option) else "default"))
    effective = replace(config, model_dir=str(model_dir))
    for key, value, source in config_sources(effective, data, overrides):
        rows.append(ConfigRow(key, "***" if key in SECRET_KEYS and value else value, source))
    return tuple(rows)


def _shown(value: Any, width: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 4] + '..."'


def format_config(rows: tuple[ConfigRow, ...]) -> str:
    """The effective config as an aligned table: key, value, source."""
    lines = [f"{'key':34} {'value':44} source"]
    lines += [f"{row.key:34} {_shown(row.value, 44):44} {row.source}" for row in rows]
    return "\n".join(lines)


def to_json(findings: list[Finding], setup: Setup, *, strict: bool = False) -> str:
    """Findings, exit code and effective config, for machines."""
    return json.dumps(
        {
            "exit_code": exit_code(findings, strict=strict),
            "findings": [asdict(f) for f in findings],
            "pipeline": str(setup.pipeline) if setup.pipeline else None,
            "config": [asdict(row) for row in setup.rows],
        },
        ensure_ascii=False,
        indent=1,
    )


__all__ = [
    "CHECKS",
    "LEVELS",
    "Check",
    "ConfigRow",
    "Finding",
    "Setup",
    "accepts_anonymous",
    "check_broker",
    "check_dirs",
    "check_exposure",
    "check_input",
    "check_models",
    "check_mqtt",
    "check_output",
    "check_permissions",
    "check_processing",
    "check_wake",
    "effective_config",
    "exit_code",
    "format_config",
    "is_loopback",
    "run_checks",
    "to_json",
]
