"""Wiring: the stages, the bounded queues between them, the turn lifecycle, the commands.

    source -> vad -> asr -> llm -> chunker -> tts -> output(sink)

One TaskGroup owns every stage task; each task is named. ``EndOfStream`` from the source runs
down the chain and ends each stage in turn, so ``run()`` returns once the last reply has been
written. Turns begin from speech, or from the ``ask``/``say`` commands (which enter the chain
after the ASR or after the LLM). A new turn cancels the turns still in flight (``barge_in``);
a cancelled turn's items are dropped wherever they are queued, and its generation and
synthesis stop. Observers follow along on ``events`` without ever slowing the voice path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from assistant.audio.sinks import AudioSink
from assistant.audio.sources import AudioSource
from assistant.clock import StreamClock
from assistant.config import Config
from assistant.endpointing.echo import EchoGate
from assistant.engines import Engines
from assistant.errors import AssistantError, ConfigError
from assistant.events import (
    ErrorEvent,
    EventBus,
    ReasoningText,
    ReplyChunk,
    ReplyFinished,
    StateChanged,
    TranscriptReady,
    TurnFinished,
)
from assistant.messages import EndOfStream, Message, ReplyDone, TextChunk, TextDone, Token, Transcript
from assistant.stages.asr import AsrStage
from assistant.stages.base import Stage
from assistant.stages.chunker import ChunkerStage
from assistant.stages.llm import LlmStage
from assistant.stages.output import OutputStage
from assistant.stages.tts import TtsStage
from assistant.stages.vad import VadStage
from assistant.text.chunking import split_for_speech
from assistant.text.speakable import looks_complete
from assistant.turn.activation import Activation
from assistant.turn.budget import BudgetKeeper
from assistant.turn.latency import LatencyTracker, TurnRecord
from assistant.turn.registry import Turns

_LOGGER = logging.getLogger(__name__)


@dataclass
class TurnInfo:
    """How a turn began."""

    kind: str
    """``voice``, ``ask`` or ``say``."""
    request_id: str | None = None


class Pipeline:
    """One running voice pipeline. Build it, then ``await run(source)``."""

    def __init__(
        self,
        config: Config,
        engines: Engines,
        sink: AudioSink | None,
        *,
        clock: StreamClock | None = None,
        on_turn: Callable[[TurnRecord], None] | None = None,
        on_token: Callable[[Token], None] | None = None,
        barge_in: bool | None = None,
    ) -> None:
        self.config = config
        self.engines = engines
        self.sink = sink
        self.clock = clock or StreamClock(realtime=config.input.realtime)
        self.turns = Turns()
        self.tracker = LatencyTracker(self._finished, self._marked)
        self.events = EventBus()
        self.on_turn = on_turn
        self.on_token = on_token
        self.barge_in = config.input.realtime if barge_in is None else barge_in
        """A new turn cancels turns in flight. Off by default for unpaced input (a recording is
        processed as fast as possible, so its questions must not cut each other's answers off)."""
        self.errors: list[tuple[int, AssistantError]] = []
        """(turn id, error) for every turn that failed, newest last (the last 100)."""
        self.state = "idle"
        self.activation = Activation(config.listen)
        self.muted = config.listen.mode == "push"
        self._info: dict[int, TurnInfo] = {}
        self._inboxes: dict[str, asyncio.Queue[Message]] = {}
        self._vad: VadStage | None = None
        self._output: OutputStage | None = None
        self._stages: dict[str, Stage] = {}
        self._listen_once = False
        self._heard: dict[int, Transcript] = {}
        """Speculative transcripts whose turn is not committed yet."""
        self._void: set[int] = set()
        """Turns in which ASR found no speech."""
        self.budget = BudgetKeeper(config.latency, self.tracker, self.clock)

    # -- turn lifecycle -------------------------------------------------------------------

    def _begin(self, turn_id: int, kind: str, request_id: str | None = None) -> None:
        if self.barge_in:
            for older in self.tracker.open_turns():
                if older < turn_id and not self.turns.is_cancelled(older):
                    self.cancel(older)
        self._info[turn_id] = TurnInfo(kind, request_id)

    def _request_id(self, turn_id: int) -> str | None:
        info = self._info.get(turn_id)
        return info.request_id if info else None

    def _on_error(self, turn_id: int, err: AssistantError) -> None:
        self.errors.append((turn_id, err))
        del self.errors[:-100]
        self.events.publish(ErrorEvent(turn_id, self._request_id(turn_id), err.code, err.message))
        self.turns.cancel(turn_id)
        self.tracker.finish(turn_id, "error", err.code)

    def _on_transcript(self, transcript: Transcript) -> Transcript | None:
        """A turn was heard: admit it (wake phrase, push-to-talk) and act on it; None drops it."""
        turn_id = transcript.turn_id
        text = self.activation.admit(transcript.text, time.monotonic())
        if text is None:
            self._on_no_speech(turn_id)
            return None
        if text != transcript.text:
            transcript = Transcript(turn_id, text)
            self.tracker.record(turn_id).transcript = text
        if self.turns.is_held(turn_id):  # a speculation: takes effect when the endpoint is final
            self._heard[turn_id] = transcript
            if self._vad is not None and looks_complete(transcript.text):
                self._vad.quick_end(turn_id)
            return transcript
        self._commit_effects(transcript)
        return transcript

    def _on_speech_start(self, turn_id: int) -> None:
        """Barge-in: the user speaks while a reply plays: stop it at once."""
        self.tracker.record(turn_id)
        if not (self.config.listen.barge_in and self.barge_in):
            return
        speaking = [
            t for t in self.tracker.open_turns()
            if t != turn_id and "first_audio" in self.tracker.record(t).marks
        ]  # fmt: skip
        if speaking:
            for older in speaking:
                self.cancel(older)
            self.tracker.action(turn_id, "barge_in")
            interrupt = getattr(self.sink, "interrupt", None)
            if interrupt is not None:
                interrupt()

    def _on_voice(self, suspect: bool) -> None:
        """The user may be starting to talk over the reply: pause the speaker until it is sure."""
        if not (self.config.listen.barge_in and self.barge_in):
            return
        action = getattr(self.sink, "pause" if suspect else "resume", None)
        if action is not None:
            action()

    def _commit_effects(self, transcript: Transcript) -> None:
        self._begin(transcript.turn_id, "voice")
        self.events.publish(TranscriptReady(transcript.turn_id, None, transcript.text, "voice"))
        if self._listen_once:
            self._listen_once = False
            self.set_muted(True)

    def _on_commit(self, turn_id: int, speech_end_ms: float, endpoint_ms: float) -> None:
        """The endpointer's decision on ``turn_id`` is final."""
        if turn_id in self._void:
            self._void.discard(turn_id)
            return
        rec = self.tracker.record(turn_id)
        rec.mark("speech_end", speech_end_ms)
        rec.mark("endpoint", endpoint_ms)
        self.turns.release(turn_id)
        heard = self._heard.pop(turn_id, None)
        if heard is not None:
            self._commit_effects(heard)
        self.budget.committed(turn_id, speech_end_ms)

    def _on_discard(self, turn_id: int) -> None:
        """Speech resumed: the speculation on ``turn_id`` is void."""
        self.budget.closed(turn_id)
        self._heard.pop(turn_id, None)
        self._void.discard(turn_id)
        self.tracker.discard(turn_id)

    def _on_no_speech(self, turn_id: int) -> None:
        self.budget.closed(turn_id)
        self._heard.pop(turn_id, None)
        if self.turns.is_held(turn_id):
            self._void.add(turn_id)

    def _on_reasoning(self, turn_id: int, text: str) -> None:
        self.events.publish(ReasoningText(turn_id, self._request_id(turn_id), text))

    def _on_chunk(self, chunk: TextChunk) -> None:
        if chunk.index == 0 and not chunk.text.rstrip("\"')”’»").endswith((".", "!", "?", "…")):
            self.tracker.action(chunk.turn_id, "first_chunk_shortened")
        self.events.publish(
            ReplyChunk(chunk.turn_id, self._request_id(chunk.turn_id), chunk.text, chunk.index)
        )

    def _on_first_chunk(self, turn_id: int, expected_ms: float) -> None:
        if self.tracker.is_open(turn_id):
            self.tracker.record(turn_id).answer_eta_ms = self.clock.position_ms() + expected_ms

    def _on_reply(self, done: ReplyDone) -> None:
        rid = self._request_id(done.turn_id)
        self.events.publish(ReplyFinished(done.turn_id, rid, done.text.strip(), done.finish_reason))

    def _marked(self, turn_id: int, mark: str) -> None:
        self.budget.marked(turn_id, mark)
        if mark == "speech_start":
            self._set_state("listening")
        elif mark in ("endpoint", "transcript"):
            self._set_state("thinking")
        elif mark == "first_audio":
            self._set_state("speaking")
        elif mark == "done":
            self.activation.replied(time.monotonic())

    def _finished(self, rec: TurnRecord) -> None:
        self.budget.closed(rec.turn_id)
        info = self._info.pop(rec.turn_id, TurnInfo("voice"))
        if rec.outcome == "answered":
            for span in self.budget.policy.over_budget(rec):
                self.tracker.actions[f"over_budget.{span}"] += 1
        self.turns.forget(rec.turn_id)
        if self.on_turn is not None:
            self.on_turn(rec)
        self.events.publish(TurnFinished(rec.turn_id, info.request_id, rec.to_json(), info.kind))
        if not self.tracker.open_turns():
            self._set_state("idle")

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.events.publish(StateChanged(state, self.muted))

    # -- commands -------------------------------------------------------------------------

    def cancel(self, turn_id: int | None = None) -> list[int]:
        """Stop one turn, or every turn in flight: queued items dropped, generation and synthesis
        stopped. Returns the turns cancelled."""
        targets = [turn_id] if turn_id is not None else self.tracker.open_turns()
        done = []
        for target in targets:
            if self.tracker.is_open(target):
                self.turns.cancel(target)
                self.tracker.finish(target, "cancelled")
                done.append(target)
        return done

    def device_state(self, state: str) -> None:
        """An audio device reports ``waiting_for_device``, or that it works again."""
        if state == "waiting_for_device":
            self._set_state(state)
        elif self.state == "waiting_for_device":
            self._set_state("idle" if not self.tracker.open_turns() else "thinking")

    def set_muted(self, muted: bool) -> None:
        """While muted, the microphone is heard as silence; commands still work."""
        self.muted = muted
        if self._vad is not None:
            self._vad.muted = muted
        self.events.publish(StateChanged(self.state, muted))

    def listen(self) -> None:
        """Push-to-talk: open the microphone for one turn even when muted."""
        if self.muted:
            self._listen_once = True
            self.set_muted(False)

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded config without reloading models (SIGHUP). Keys that need a restart
        (models, ``input``, ``queues``...) are kept at their running values by the caller."""
        self.config = config
        awake = self.activation
        self.activation = Activation(config.listen)
        self.activation.adopt(awake)
        self.budget.reconfigure(config.latency)
        for part, section in ((self.engines.asr, config.asr), (self.engines.llm, config.llm),
                              (self.engines.tts, config.tts)):  # fmt: skip
            apply = getattr(part, "reconfigure", None)
            if apply is not None:
                apply(section)
            elif hasattr(part, "config"):
                part.config = section  # type: ignore[union-attr]
        for stage in self._stages.values():
            if isinstance(stage, ChunkerStage):
                stage.config = config.chunker
            elif isinstance(stage, LlmStage):
                stage.reconfigure(config.llm)
        if self._vad is not None:
            self._vad.reconfigure(config.vad)
        _LOGGER.info("configuration reloaded")

    def busy(self) -> bool:
        """True when the queue that commands enter is close to full."""
        inbox = self._inboxes.get("llm")
        return inbox is None or inbox.qsize() >= max(1, inbox.maxsize - 4)

    async def ask(self, text: str, request_id: str | None = None, *, speak: bool = True) -> int:
        """Answer ``text`` as a new turn (user-role data, like a transcript); returns its id."""
        inbox = self._require("llm")
        turn_id = self.turns.new_id()
        self._begin(turn_id, "ask", request_id)
        if not speak:
            self.turns.set_silent(turn_id)
        rec = self.tracker.record(turn_id)
        rec.transcript = text
        rec.mark("transcript", self.clock.position_ms())
        self.events.publish(TranscriptReady(turn_id, request_id, text, "text"))
        await inbox.put(Transcript(turn_id, text))
        return turn_id

    async def say(self, text: str, request_id: str | None = None) -> int:
        """Speak ``text`` as it is (no LLM) as a new turn; returns its id."""
        inbox = self._require("chunker")
        turn_id = self.turns.new_id()
        self._begin(turn_id, "say", request_id)
        rec = self.tracker.record(turn_id)
        rec.reply = text
        rec.mark("transcript", self.clock.position_ms())
        for index, chunk in enumerate(split_for_speech(text, self.config.chunker)):
            await inbox.put(TextChunk(turn_id, chunk, index))
        await inbox.put(TextDone(turn_id))
        return turn_id

    def _require(self, stage: str) -> asyncio.Queue[Message]:
        inbox = self._inboxes.get(stage)
        if inbox is None:
            raise ConfigError(f"this pipeline has no running {stage} stage")
        return inbox

    # -- running ----------------------------------------------------------------------------

    def _text_stages(self) -> list[tuple[str, Stage]]:
        stages: list[tuple[str, Stage]] = []
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
                        on_reasoning=self._on_reasoning,
                    ),
                )
            )
        if self.sink is not None:
            stages.append(
                ("chunker", ChunkerStage(self.config.chunker, self.turns, self._on_chunk, self._on_reply))
            )
            if self.engines.tts is not None:
                tts = TtsStage(
                    self.engines.tts,
                    self.turns,
                    self._on_error,
                    rate=self.budget.rate,
                    on_first_chunk=self._on_first_chunk,
                )
                stages.append(("tts", tts))
            self._output = OutputStage(self.sink, self.turns, self.tracker, self.clock)
            stages.append(("output", self._output))
        return stages

    async def run(self, source: AudioSource, *, extra: list[Coroutine[Any, Any, None]] | None = None) -> None:
        """Listen to ``source`` until it ends and every reply has been written.

        ``extra`` coroutines (e.g. the MQTT bridge) run in the same task group and are cancelled
        when the pipeline ends.
        """
        if self.engines.asr is None:
            raise ConfigError("the voice pipeline needs an ASR engine")
        self._vad = VadStage(
            self.config.vad,
            self.turns,
            on_commit=self._on_commit,
            on_discard=self._on_discard,
            on_speech_start=self._on_speech_start,
            on_voice=self._on_voice,
        )
        self._vad.muted = self.muted
        peak = getattr(self.sink, "playback_peak", None)
        if peak is not None:
            self._vad.echo_gate = EchoGate(peak, margin_db=self.config.listen.echo_margin_db)
        asr = AsrStage(
            self.engines.asr,
            self.turns,
            self.tracker,
            self.clock,
            self._on_transcript,
            self._on_error,
            self._on_no_speech,
        )
        stages: list[tuple[str, Stage]] = [("vad", self._vad), ("asr", asr), *self._text_stages()]
        extra = list(extra or [])
        if self.config.latency.ack and self.clock.realtime and self._output and self.engines.tts:
            await self.budget.prepare(self.engines.tts)
            extra.append(self.budget.run(lambda: self._output))
        first: asyncio.Queue[Message] = asyncio.Queue(self.config.queues.audio)
        await self._run_chain(stages, first, source.run(first, self.clock), extra)

    async def run_text(self, text: str) -> None:
        """Answer typed ``text`` as one turn (no audio in), then end."""

        async def feed(first: asyncio.Queue[Message]) -> None:
            self.clock.start()
            self.clock.ended()
            await self.ask(text)
            await first.put(EndOfStream())

        first: asyncio.Queue[Message] = asyncio.Queue(self.config.queues.text)
        await self._run_chain(self._text_stages(), first, feed(first), [])

    async def _run_chain(
        self,
        stages: list[tuple[str, Stage]],
        first: asyncio.Queue[Message],
        feeder: Coroutine[Any, Any, None],
        extra: list[Coroutine[Any, Any, None]],
    ) -> None:
        queues = [first] + [asyncio.Queue[Message](self._bound(name)) for name, _ in stages]
        self._inboxes = {name: queues[index] for index, (name, _) in enumerate(stages)}
        self._stages = dict(stages)
        async with asyncio.TaskGroup() as group:
            helpers = [group.create_task(coro, name=f"extra-{i}") for i, coro in enumerate(extra)]
            chain = [group.create_task(feeder, name="source")]
            for index, (name, stage) in enumerate(stages):
                chain.append(group.create_task(stage.run(queues[index], queues[index + 1]), name=name))
            await asyncio.gather(*chain)
            for task in helpers:
                task.cancel()
        self._inboxes = {}

    def _bound(self, stage: str) -> int:
        return self.config.queues.audio if stage in ("vad", "tts") else self.config.queues.text
