"""Thin synchronous adapters over the model runtimes; stages call them with ``asyncio.to_thread``.

Each engine subclasses its contract in ``assistant.contracts`` (what it can do is declared
there, not probed). Each engine module imports its runtime lazily, so a missing runtime is a clear
error when that engine is asked for, not an ImportError at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from assistant.config import Config
from assistant.contracts import ChatEngine, Synthesizer, Transcriber, TurnDetector
from assistant.models.manifest import ModelSpec
from assistant.wake import WakeDetector


@dataclass
class Engines:
    """The loaded models; any may be absent where a command does not need it."""

    asr: Transcriber | None = None
    llm: ChatEngine | None = None
    tts: Synthesizer | None = None
    wake: WakeDetector | None = None
    """The wake word detector (``listen.mode = "wake"`` with the ``micro`` engine)."""
    turn: TurnDetector | None = None
    """The end-of-turn model (``vad.turn_model``), when its file and onnxruntime are here."""
    turn_problem: str = ""
    """Why ``turn`` is None, for the endpointer's message."""


def load_engines(
    config: Config,
    model_dir: Path,
    *,
    asr: bool = True,
    llm: bool = True,
    tts: bool = True,
    wake: bool = True,
) -> Engines:
    """Resolve, check and load the models named by the config (before any audio is read)."""
    from assistant import models
    from assistant.engines.share import CoreShare

    quiet_numpy_threads()
    engines = Engines()
    share = CoreShare()
    if wake and asr:  # a wake word matters only where speech is heard
        from assistant.engines.micro_wake import load_wake_detector

        engines.wake = load_wake_detector(config.listen)
    if asr:  # the turn model judges speech
        engines.turn, engines.turn_problem = load_turn_model(config, model_dir)
    if asr and config.asr.engine == "wyoming":
        from assistant.engines.wyoming_remote import WyomingTranscriber

        engines.asr = WyomingTranscriber(config.asr)
    elif asr:
        from assistant.engines.whisper import WhisperEngine

        engines.asr = WhisperEngine(models.resolve(config.asr.model, "asr", model_dir), config.asr)
    if llm:
        if config.llm.engine == "openai":
            from assistant.engines.openai_http import OpenAIEngine

            engines.llm = OpenAIEngine(config.llm)
        else:
            from assistant.engines.llama import LlamaEngine, default_state_dir

            spec = models.load_manifest().get(config.llm.model)
            engines.llm = LlamaEngine(
                models.resolve(config.llm.model, "llm", model_dir),
                config.llm,
                state_dir=default_state_dir(model_dir),
                share=share if config.llm.yield_to_tts else None,
                history_tokens=spec.history_tokens if spec is not None else None,
            )
    if tts and config.tts.engine == "wyoming":
        from assistant.engines.wyoming_remote import WyomingSynthesizer

        engines.tts = WyomingSynthesizer(config.tts)
    elif tts:
        from assistant.engines.piper import PiperEngine
        from assistant.service import allocator

        engines.tts = PiperEngine(
            models.resolve(config.tts.voice, "tts", model_dir),
            config.tts,
            share=share,
            after=allocator.trim if allocator.trims() else None,
        )
    return engines


TURN_MODEL = "smart-turn-v3.2"
"""The manifest name of the end-of-turn model."""


def load_turn_model(
    config: Config, model_dir: Path, manifest: dict[str, ModelSpec] | None = None
) -> tuple[TurnDetector | None, str]:
    """The end-of-turn model and, when it cannot be had, why not (never raises for that: the
    endpointer goes on with the transcript alone). Its session is made now when ``vad.turn_model``
    is on, else at its first use (the key may be switched on by a reload)."""
    from assistant import models
    from assistant.engines.smart_turn import SmartTurnEngine, TurnModelUnavailable
    from assistant.errors import AssistantError

    try:
        engine = SmartTurnEngine(models.resolve(TURN_MODEL, "turn", model_dir, manifest))
        if config.vad.turn_model:
            engine.load()
    except TurnModelUnavailable as err:
        return None, f"the turn model cannot run here ({err}; it comes with piper-tts)"
    except AssistantError as err:
        return None, f"the turn model is unavailable: {err.message}"
    return engine, ""


def quiet_numpy_threads() -> None:
    """Keep numpy's BLAS (OpenBLAS) to the calling thread.

    numpy's matrix work here is small (Whisper's features, filters), but after each call
    OpenBLAS's own worker thread keeps spinning (40-50 ms of CPU), on the core the LLM needs: it
    lands on the LLM's first evaluation after each transcription, whose two threads wait for
    each other at every step (``perf``: 150 ms of spinning inside 8 first evaluations of 817 ms).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


__all__ = ["TURN_MODEL", "Engines", "load_engines", "load_turn_model", "quiet_numpy_threads"]
