"""Wiring: the stages, the bounded queues between them, the turn lifecycle.

    source -> vad -> asr -> llm -> chunker -> tts -> output(sink)

One TaskGroup owns every stage task; each task is named. ``EndOfStream`` from the source runs
down the chain and ends each stage in turn, so ``run()`` returns once the last reply has been
written. A new turn's transcript cancels the turns still in flight (``barge_in``); a cancelled
turn's items are dropped wherever they are queued, and its generation and synthesis stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .audio.sinks import AudioSink
from .audio.sources import AudioSource
from .clock import StreamClock
from .config import Config
from .errors import AssistantError
from .latency import LatencyTracker, TurnRecord
from .messages import EndOfStream, Message, Token, Transcript
from .stages.asr import AsrStage, Transcriber
from .stages.base import Turns
from .stages.chunker import ChunkerStage
from .stages.llm import ChatEngine, LlmStage
from .stages.output import OutputStage
from .stages.tts import Synthesizer, TtsStage
from .stages.vad import VadStage

_LOGGER = logging.getLogger(__name__)


@dataclass
class Engines:
    """The loaded models; any may be absent where a command does not need it."""

    asr: Transcriber | None = None
    llm: ChatEngine | None = None
    tts: Synthesizer | None = None


def load_engines(
    config: Config, model_dir: Path, *, asr: bool = True, llm: bool = True, tts: bool = True
) -> Engines:
    """Resolve, check and load the models named by the config (before any audio is read)."""
    from . import models

    engines = Engines()
    if asr:
        from .engines.whisper import WhisperEngine

        engines.asr = WhisperEngine(models.resolve(config.asr.model, "asr", model_dir), config.asr)
    if llm:
        from .engines.llama import LlamaEngine

        engines.llm = LlamaEngine(models.resolve(config.llm.model, "llm", model_dir), config.llm)
    if tts:
        from .engines.piper import PiperEngine

        engines.tts = PiperEngine(models.resolve(config.tts.voice, "tts", model_dir), config.tts)
    return engines


class Pipeline:
    """One running voice pipeline. Build it, then ``await run()``."""

    def __init__(
        self,
        config: Config,
        engines: Engines,
        sink: AudioSink | None,
        *,
        clock: StreamClock | None = None,
        on_turn: Callable[[TurnRecord], None] | None = None,
        on_token: Callable[[Token], None] | None = None,
        barge_in: bool = True,
    ) -> None:
        self.config = config
        self.engines = engines
        self.sink = sink
        self.clock = clock or StreamClock(realtime=config.input.realtime)
        self.turns = Turns()
        self.tracker = LatencyTracker(on_turn)
        self.on_token = on_token
        self.barge_in = barge_in
        self.errors: list[tuple[int, AssistantError]] = []
        """(turn id, error) for every turn that failed, oldest first."""

    def _on_error(self, turn_id: int, err: AssistantError) -> None:
        self.errors.append((turn_id, err))
        del self.errors[:-100]
        self.turns.cancel(turn_id)
        self.tracker.finish(turn_id, "error", err.code)

    def _on_transcript(self, transcript: Transcript) -> None:
        if not self.barge_in:
            return
        for turn_id in self.tracker.open_turns():
            if turn_id < transcript.turn_id:
                self.cancel(turn_id)

    def cancel(self, turn_id: int) -> None:
        """Stop a turn everywhere: queued items dropped, generation and synthesis stopped."""
        self.turns.cancel(turn_id)
        self.tracker.finish(turn_id, "cancelled")

    def _text_stages(self) -> list[tuple[str, object]]:
        stages: list[tuple[str, object]] = []
        if self.engines.llm is not None:
            stages.append(
                (
                    "llm",
                    LlmStage(
                        self.engines.llm,
                        self.config.llm,
                        self.turns,
                        self.tracker,
                        self.clock,
                        self.on_token,
                        self._on_error,
                    ),
                )
            )
        if self.engines.tts is not None and self.sink is not None:
            stages.append(("chunker", ChunkerStage(self.config.chunker, self.turns)))
            stages.append(("tts", TtsStage(self.engines.tts, self.turns, self._on_error)))
        if self.sink is not None:
            stages.append(("output", OutputStage(self.sink, self.turns, self.tracker, self.clock)))
        return stages

    async def run(self, source: AudioSource) -> None:
        """Listen to ``source`` until it ends and every reply has been written."""
        if self.engines.asr is None:
            raise AssistantError("the voice pipeline needs an ASR engine", code="config_invalid")
        stages: list[tuple[str, object]] = [
            ("vad", VadStage(self.config.vad, self.turns)),
            (
                "asr",
                AsrStage(
                    self.engines.asr,
                    self.turns,
                    self.tracker,
                    self.clock,
                    self._on_transcript,
                    self._on_error,
                ),
            ),
            *self._text_stages(),
        ]
        first: asyncio.Queue[Message] = asyncio.Queue(self.config.queues.audio)
        await self._run_chain(stages, first, source.run(first, self.clock))

    async def run_text(self, turn_id: int, text: str) -> None:
        """Answer typed ``text`` as one turn (no audio in), then end."""
        first: asyncio.Queue[Message] = asyncio.Queue(self.config.queues.text)
        self.tracker.record(turn_id).transcript = text

        async def feed() -> None:
            self.clock.start()
            self.clock.ended()
            self.tracker.record(turn_id).mark("transcript", self.clock.position_ms())
            await first.put(Transcript(turn_id, text))
            await first.put(EndOfStream())

        await self._run_chain(self._text_stages(), first, feed())

    async def _run_chain(
        self, stages: list[tuple[str, object]], first: asyncio.Queue[Message], feeder: object
    ) -> None:
        queues = [first] + [asyncio.Queue(self._bound(name)) for name, _ in stages]
        async with asyncio.TaskGroup() as group:
            group.create_task(feeder, name="source")  # type: ignore[arg-type]
            for index, (name, stage) in enumerate(stages):
                run = stage.run  # type: ignore[attr-defined]
                group.create_task(run(queues[index], queues[index + 1]), name=name)

    def _bound(self, stage: str) -> int:
        return self.config.queues.audio if stage in ("vad", "tts") else self.config.queues.text
