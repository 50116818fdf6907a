"""Models and folders: every model the config needs, verified; every folder the daemon writes.

Models are verified with ``models.verify`` (every byte hashed against the manifest), so a
truncated or swapped file fails here rather than at start-up; the fix is the exact
``assistant models pull NAME``. Folders are probed by creating a file in them, which counts
ACLs, read-only mounts and the systemd sandbox exactly as the daemon would meet them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from assistant import models
from assistant.doctor.base import Finding, Setup, chown_fix, folder_of, unwritable
from assistant.errors import AssistantError, ModelCorruptError, ModelMissingError

SYSTEMD_DIRS = ("STATE_DIRECTORY", "CACHE_DIRECTORY")
"""Set by systemd for ``StateDirectory=``/``CacheDirectory=`` (colon-separated paths)."""


def needed_models(setup: Setup) -> list[tuple[str, str, str]]:
    """(config key, model name or path, role) of every model ``run`` loads."""
    config = setup.config
    needed = [("asr.model", config.asr.model, "asr")]
    if config.llm.engine == "llama":
        needed.append(("llm.model", config.llm.model, "llm"))
    needed.append(("tts.voice", config.tts.voice, "tts"))
    return needed


def _check_model(
    setup: Setup, key: str, name: str, role: str, manifest: dict[str, models.ModelSpec]
) -> Finding:
    spec = manifest.get(name)
    choices = ", ".join(n for n, s in manifest.items() if s.role == role)
    if spec is None:
        try:
            path = models.resolve(name, role, setup.model_dir, manifest)
        except AssistantError as err:
            return Finding(
                "models",
                "fail",
                f"[{err.code}] {key} = {name!r}: {err.message}",
                f"set {key} to a model name ({choices}) or a path to a {role} model",
            )
        return Finding("models", "ok", f"{key} = {path}: format checked (not in the manifest: no checksum)")
    if spec.role != role:
        return Finding(
            "models",
            "fail",
            f"[config_invalid] {key} = {name!r} is a {spec.role} model, not {role}",
            f"set {key} to one of: {choices}",
        )
    fix = f"{setup.pull} {name}"
    folder = models.model_path(spec, setup.model_dir)
    [(_, status)] = models.list_models(setup.model_dir, {name: spec})
    if status == "missing":
        return Finding(
            "models", "fail", f"[{ModelMissingError.code}] {key} = {name} is not downloaded ({folder})", fix
        )
    problems = models.verify(spec, setup.model_dir)
    if problems:
        absent = any(p.endswith(": missing") for p in problems)  # verify's word for an absent file
        code = ModelMissingError.code if absent else ModelCorruptError.code
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return Finding("models", "fail", f"[{code}] {key} = {name}: {problems[0]}{more}", fix)
    how = "sha256 verified" if spec.sha256_known else "sizes checked (no sha256 in the manifest)"
    return Finding(
        "models", "ok", f"{key} = {name}: {len(spec.files)} file{'s' if len(spec.files) > 1 else ''}, {how}"
    )


async def check_models(setup: Setup) -> list[Finding]:
    """Each model the config needs: present, and every file as the manifest says."""
    manifest = await asyncio.to_thread(models.load_manifest)
    findings = [
        await asyncio.to_thread(_check_model, setup, key, name, role, manifest)
        for key, name, role in needed_models(setup)
    ]
    if setup.config.vad.turn_model:  # the daemon runs without it: a warning, not a failure
        from assistant.engines import TURN_MODEL

        turn = await asyncio.to_thread(_check_model, setup, "vad.turn_model", TURN_MODEL, "turn", manifest)
        if turn.level == "fail":
            turn = dataclasses.replace(
                turn,
                level="warn",
                message=f"{turn.message} (the end of turn is judged by the transcript alone)",
            )
        findings.append(turn)
    if setup.config.llm.engine != "llama":
        findings.append(
            Finding(
                "models",
                "ok",
                f"llm.engine = {setup.config.llm.engine}: the LLM runs on"
                f" {setup.config.llm.url} (not checked)",
            )
        )
    return findings


def state_dir(setup: Setup) -> Path:
    """Where the LLM saves its warm prompt state."""
    from assistant.engines.llama import default_state_dir

    return (
        Path(setup.config.llm.state_cache).expanduser()
        if setup.config.llm.state_cache
        else default_state_dir(setup.model_dir)
    )


async def check_dirs(setup: Setup) -> list[Finding]:
    """The folders the daemon and ``models pull`` write: each must take a new file."""
    wanted: list[tuple[str, Path, str, str]] = [
        ("model folder", setup.model_dir, "fail", "`assistant models pull` writes there"),
    ]
    llm = setup.config.llm
    if llm.engine == "llama" and llm.warm:
        wanted.append(
            (
                "llm state folder",
                state_dir(setup),
                "warn",
                "the warm prompt state is not saved: each start evaluates the system prompt again",
            )
        )
    for variable in SYSTEMD_DIRS:
        for path in filter(None, setup.environ.get(variable, "").split(":")):
            wanted.append((f"${variable}", Path(path), "fail", "systemd gave it to the service to write"))
    if setup.report and setup.report != "-":
        wanted.append(
            (
                "report folder",
                folder_of(setup.report),
                "fail",
                "--report cannot be written",
            )
        )
    findings = []
    for what, folder, level, why in wanted:
        problem = await asyncio.to_thread(unwritable, folder)
        if problem:
            findings.append(
                Finding(
                    "dirs", level, f"{what} {folder} is not writable ({problem}): {why}", chown_fix(folder)
                )
            )
        else:
            findings.append(Finding("dirs", "ok", f"{what} {folder} is writable"))
    return findings
