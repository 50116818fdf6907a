"""The wake word check: in ``listen.mode = "wake"``, does the wake word model load here?"""

from __future__ import annotations

import asyncio

from assistant.doctor.base import Finding, Setup
from assistant.errors import AssistantError
from assistant.wake import INSTALL_HINT, SHIPPED_MODELS


async def check_wake(setup: Setup) -> list[Finding]:
    """Nothing outside wake mode; with the ``phrase`` engine, what a transcript must begin with;
    else the model is loaded as the daemon would load it."""
    listen = setup.config.listen
    if listen.mode != "wake":
        return []
    phrases = ", ".join(repr(p) for p in listen.wake_phrases)
    if listen.wake_engine == "phrase":
        return [Finding("wake", "ok", f"listen.wake_engine = phrase: transcripts must begin with {phrases}")]
    from assistant.engines.micro_wake import MicroWakeEngine, WakeUnavailable

    try:
        detector = await asyncio.to_thread(MicroWakeEngine, listen.wake_model)
    except WakeUnavailable as err:
        if listen.wake_engine == "micro":
            return [Finding("wake", "fail", f"listen.wake_engine = micro cannot run: {err}", INSTALL_HINT)]
        message = f"no wake word model ({err}): wake mode listens for {phrases} in every transcript"
        return [Finding("wake", "warn", message, f"{INSTALL_HINT}, or set listen.wake_engine = 'phrase'")]
    except AssistantError as err:
        fix = f"listen.wake_model: one of {sorted(SHIPPED_MODELS)}, or a microWakeWord model's .json"
        return [Finding("wake", "fail", f"[{err.code}] {err.message}", fix)]
    return [
        Finding(
            "wake",
            "ok",
            f"wake word {detector.wake_word!r} ({detector.name}) loads; it fires at probability"
            f" {detector.threshold:.2f}",
        )
    ]
