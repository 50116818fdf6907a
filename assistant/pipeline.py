"""Wiring: the stages in their order, the bounded queues between them, and the commands.

    source -> apm -> wake -> vad -> wake_trim -> asr -> intents -> llm -> chunker -> tts -> output(sink)

The order is data (``VOICE_STAGES``, ``TEXT_STAGES``); a stage whose engine or sink is absent is
left out (``intents`` where ``intents.enabled`` is off, ``wake`` and ``wake_trim`` without a wake
word model, ``apm`` where ``[audio_processing]`` turns everything off).
Commands matched by the intents stage are answered without the LLM; their timers are kept by a
helper task (``timers``).
``EndOfStream`` from the source runs down the chain and ends each stage in turn.
Every stage reports to one ``TurnController`` (turn lifecycle, latency, state, events); the
pipeline builds the chain and offers the commands (``ask``, ``say``, ``cancel``, ``set_muted``,
``listen``, ``reconfigure``). It starts no task itself: ``daemon.Daemon`` runs what ``voice_chain``,
``text_chain`` and ``helpers`` return in its one TaskGroup. See ``docs/architecture.md``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from assistant.audio.sinks import AudioSink
from assistant.audio.sources import AudioSource
from assistant.clock import StreamClock
from assistant.config import Config, IntentsConfig
from assistant.contracts import EchoReference, Speaker, Volume
from assistant.endpointing.echo import gate_for
from assistant.engines import Engines
from assistant.errors import AssistantError, ConfigError
from assistant.events import EventBus
from assistant.intents.alarms import TimerKeeper
from assistant.intents.handlers import Handlers
from assistant.intents.matcher import Matcher
from assistant.intents.timers import default_timers_path
from assistant.messages import EndOfStream, Message, TextChunk, TextDone, Transcript
from assistant.service import allocator
from assistant.stages.apm import AudioProcessingStage
from assistant.stages.asr import AsrStage
from assistant.stages.base import Stage
from assistant.stages.chunker import ChunkerStage
from assistant.stages.intents import IntentStage
from assistant.stages.llm import LlmStage
from assistant.stages.output import OutputStage
from assistant.stages.tts import TtsStage
from assistant.stages.vad import VadStage
from assistant.stages.wake import WakeStage, WakeTrimStage
from assistant.text.chunking import split_for_speech
from assistant.turn.controller import TurnController
from assistant.turn.kinds import TurnKind
from assistant.turn.latency import LatencyTracker, TurnRecord
from assistant.wake import running

_LOGGER = logging.getLogger(__name__)

VOICE_STAGES = ("apm", "wake", "vad", "wake_trim", "asr", "intents", "llm", "chunker", "tts", "output")
"""The stages of the voice path, in order."""
TEXT_STAGES = ("intents", "llm", "chunker", "tts", "output")
"""The stages of a typed question (``assistant ask``)."""
AUDIO_QUEUES = ("apm", "wake", "vad", "tts")
"""Stages whose inbox carries audio (bounded by ``queues.audio``, the others by ``queues.text``)."""

Task = tuple[str, Coroutine[Any, Any, None]]
"""A named coroutine for the daemon's TaskGroup."""


def timers_path(config: IntentsConfig) -> Path:
    """``intents.timers_file``, else ``timers.json`` in the state folder."""
    return Path(config.timers_file).expanduser() if config.timers_file else default_timers_path()


class Pipeline:
    """One voice pipeline: its stages, their queues, its turn controller, its commands."""

    def __init__(
        self,
        config: Config,
        engines: Engines,
        sink: AudioSink | None,
        *,
        clock: StreamClock | None = None,
        on_turn: Callable[[TurnRecord], None] | None = None,
        on_token: Callable[[int, str], None] | None = None,
        barge_in: bool | None = None,
    ) -> None:
        """``on_turn``: each finished turn's record; ``on_token``: (turn id, answer text) as it is
        generated; ``barge_in``: a new turn cancels turns in flight (default: for paced input)."""
        config = running(config, engines.wake is not None)
        self.config = config
        self.engines = engines
        self.sink = sink
        self.clock = clock or StreamClock(realtime=config.input.realtime)
        self.controller = TurnController(
            config,
            self.clock,
            barge_in=config.input.realtime if barge_in is None else barge_in,
            on_turn=on_turn,
            on_token=on_token,
        )
        self.speaker = sink if isinstance(sink, Speaker) else None
        self.controller.speaker = self.speaker
        self.volume = sink if isinstance(sink, Volume) else None
        self.timers: TimerKeeper | None = None
        """The timers and their alarms (``intents.enabled``)."""
        self.matcher: Matcher | None = None
        self.handlers: Handlers | None = None
        if config.intents.enabled:
            self.timers = TimerKeeper(timers_path(config.intents), alarm_limit_s=config.intents.alarm_limit_s)
            self.controller.alarms = self.timers
            self.matcher, self.handlers = self._commands(config)
        self._stages: dict[str, Stage] = {}
        self._inboxes: dict[str, asyncio.Queue[Message]] = {}
        self._vad: VadStage | None = None
        self._wake: WakeStage | None = None
        self._apm: AudioProcessingStage | None = None
        self._output: OutputStage | None = None
        self.reconfigured: list[Callable[[Config], None]] = []
        """Called with the config once ``reconfigure`` has applied it; they must not raise (the
        MQTT bridge adds itself while it runs)."""

    # -- what observers and commands see ----------------------------------------------------

    @property
    def on_turn(self) -> Callable[[TurnRecord], None] | None:
        """Called with each finished turn's record."""
        return self.controller.on_turn

    @on_turn.setter
    def on_turn(self, on_turn: Callable[[TurnRecord], None] | None) -> None:
        self.controller.on_turn = on_turn

    @property
    def events(self) -> EventBus:
        return self.controller.events

    @property
    def tracker(self) -> LatencyTracker:
        return self.controller.tracker

    @property
    def state(self) -> str:
        return self.controller.state

    @property
    def muted(self) -> bool:
        return self.controller.muted

    @property
    def errors(self) -> list[tuple[int, AssistantError]]:
        """(turn id, error) for every turn that failed, newest last (the last 100)."""
        return self.controller.errors

    # -- commands -------------------------------------------------------------------------

    def cancel(self, turn_id: int | None = None) -> list[int]:
        """Stop one turn, or every turn in flight: queued items dropped, generation and synthesis
        stopped. Returns the turns cancelled."""
        return self.controller.cancel(turn_id)

    def device_state(self, state: str) -> None:
        """An audio device reports ``waiting_for_device``, or that it works again."""
        self.controller.device_state(state)

    def set_muted(self, muted: bool) -> None:
        """While muted, the microphone is heard as silence; commands still work."""
        self.controller.set_muted(muted)

    def listen(self) -> None:
        """Push-to-talk: open the microphone for one turn even when muted."""
        self.controller.listen()

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded config without reloading models (SIGHUP). Keys that need a restart
        (models, ``input``, ``queues``, ``intents.enabled``...) are kept at their running values by
        the caller. The commands are rebuilt from ``[intents]`` and ``[[devices]]`` (the user's
        sentence files read again); where they cannot be (a sentence file gone), this raises
        ``ConfigError`` before anything has changed. Then ``reconfigured``'s callbacks hear the
        config (the MQTT bridge: the devices' topics)."""
        config = running(config, self.engines.wake is not None)
        rebuilt: tuple[Matcher, Handlers] | None = None
        if self.timers is not None:  # intents.enabled (at start: it needs a restart)
            try:
                rebuilt = self._commands(config)
            except ConfigError as err:
                raise ConfigError(f"the commands cannot be reloaded: {err.message}") from err
        self.config = config
        self.controller.reconfigure(config)
        if self.engines.asr is not None:
            self.engines.asr.reconfigure(config.asr)
        if self.engines.llm is not None:
            self.engines.llm.reconfigure(config.llm)
        if self.engines.tts is not None:
            self.engines.tts.reconfigure(config.tts)
        for stage in self._stages.values():
            if isinstance(stage, ChunkerStage):
                stage.config = config.chunker
            elif isinstance(stage, LlmStage):
                stage.reconfigure(config.llm)
            if isinstance(stage, AsrStage | LlmStage | TtsStage | OutputStage):
                stage.deadlines = config.deadlines
            if isinstance(stage, AsrStage):
                stage.transcript_ms = config.latency.transcript_ms
                stage.stop_word = config.listen.stop_word
                stage.during_speech = config.asr.during_speech
        if self._vad is not None:
            self._vad.reconfigure(config.vad)
            self._vad.progress_ms = self._progress_ms(config)
        if self._wake is not None:
            self._wake.reconfigure(config.listen)
        if self._apm is not None:
            self._apm.reconfigure(config.audio_processing)
        if rebuilt is not None and self.timers is not None:
            if self.handlers is not None:
                rebuilt[1].adopt(self.handlers)
            self.matcher, self.handlers = rebuilt
            self.timers.alarm_limit_s = config.intents.alarm_limit_s
            commands = self._stages.get("intents")
            if isinstance(commands, IntentStage):
                commands.reconfigure(self.matcher, self.handlers)
        for callback in list(self.reconfigured):
            callback(config)
        _LOGGER.info("configuration reloaded")

    def _progress_ms(self, config: Config) -> int:
        """How often the VAD sends the utterance so far: ``asr.during_speech`` on live input with
        an engine that can use it; 0: never."""
        asr = self.engines.asr
        live = config.asr.during_speech and self.clock.realtime and asr is not None and asr.timed
        return config.asr.during_speech_every_ms if live else 0

    def _commands(self, config: Config) -> tuple[Matcher, Handlers]:
        matcher = Matcher.from_config(config)
        return matcher, Handlers(matcher, self.timers, self.volume)

    def busy(self) -> bool:
        """True when the queue that commands enter is close to full."""
        inbox = self._inboxes.get("intents", self._inboxes.get("llm"))
        return inbox is None or inbox.qsize() >= max(1, inbox.maxsize - 4)

    async def ask(self, text: str, request_id: str | None = None, *, speak: bool = True) -> int:
        """Answer ``text`` as a new turn (user-role data, like a transcript); returns its id. It
        enters where a transcript would: the intents stage, else the LLM."""
        inbox = self._inboxes.get("intents") or self._require("llm")
        turn_id = self.controller.begin(TurnKind.ASK, request_id, text=text)
        if not speak:
            self.controller.turns.set_silent(turn_id)
        await inbox.put(Transcript(turn_id, text))
        return turn_id

    async def say(self, text: str, request_id: str | None = None) -> int:
        """Speak ``text`` as it is (no LLM) as a new turn; returns its id."""
        inbox = self._require("chunker")
        turn_id = self.controller.begin(TurnKind.SAY, request_id, text=text)
        for index, chunk in enumerate(split_for_speech(text, self.config.chunker)):
            await inbox.put(TextChunk(turn_id, chunk, index))
        await inbox.put(TextDone(turn_id))
        return turn_id

    def _require(self, stage: str) -> asyncio.Queue[Message]:
        inbox = self._inboxes.get(stage)
        if inbox is None:
            raise ConfigError(f"this pipeline has no running {stage} stage")
        return inbox

    # -- wiring -----------------------------------------------------------------------------

    def _build(self, name: str) -> Stage | None:
        """The stage called ``name``, or None where its engine or sink is absent."""
        config, engines, channel = self.config, self.engines, self.controller
        if name == "apm":
            if not config.audio_processing.active:
                return None
            reference = self.sink if isinstance(self.sink, EchoReference) else None
            self._apm = AudioProcessingStage(config.audio_processing, channel, reference)
            return self._apm
        if name == "wake":
            if engines.wake is None:
                return None
            self._wake = channel.wake = WakeStage(engines.wake, config.listen, channel, channel)
            return self._wake
        if name == "wake_trim":
            return None if self._wake is None else WakeTrimStage(self._wake, channel)
        if name == "vad":
            vad = self._vad = VadStage(
                config.vad, channel, turn_model=engines.turn, turn_model_problem=engines.turn_problem
            )
            vad.muted = channel.muted
            vad.progress_ms = self._progress_ms(config)
            if self.speaker is not None:
                vad.echo_gate = gate_for(self.speaker, config.listen.echo_margin_db)
            channel.endpointer = vad
            return vad
        if name == "asr":
            if engines.asr is None:
                raise ConfigError("the voice pipeline needs an ASR engine")
            language = config.intents.language or config.asr.language
            return AsrStage(
                engines.asr,
                channel,
                config.deadlines,
                config.latency.transcript_ms,
                stop_word=config.listen.stop_word,
                language=language,
                during_speech=config.asr.during_speech,
            )
        if name == "intents":
            if self.matcher is None or self.handlers is None:
                return None
            return IntentStage(
                self.matcher,
                self.handlers,
                channel,
                config.deadlines,
                llm=engines.llm is not None,
                events=channel.events,
            )
        if name == "llm":
            return (
                None if engines.llm is None else LlmStage(engines.llm, config.llm, channel, config.deadlines)
            )
        if self.sink is None:
            return None
        if name == "chunker":
            return ChunkerStage(config.chunker, channel)
        if name == "tts":
            if engines.tts is None:
                return None
            channel.tts = engines.tts
            return TtsStage(engines.tts, channel, config.deadlines, rate=channel.budget.rate)
        if name == "output":
            output = self._output = OutputStage(self.sink, channel, config.deadlines)
            channel.output = output
            return output
        raise ConfigError(f"unknown stage {name!r}: choose from {list(VOICE_STAGES)}")

    def _chain(self, names: tuple[str, ...], first: asyncio.Queue[Message], feeder: Task) -> list[Task]:
        stages = [(name, stage) for name in names if (stage := self._build(name)) is not None]
        bounds = [
            self.config.queues.audio if n in AUDIO_QUEUES else self.config.queues.text for n, _ in stages
        ]
        queues = [first, *(asyncio.Queue[Message](bound) for bound in bounds)]
        self._stages = dict(stages)
        self._inboxes = {name: queues[index] for index, (name, _) in enumerate(stages)}
        return [feeder] + [
            (name, stage.run(queues[i], queues[i + 1])) for i, (name, stage) in enumerate(stages)
        ]

    async def prepare(self) -> None:
        """Before listening: the acknowledgements are synthesized; the timers kept in their file
        run again."""
        if self.timers is not None:
            await asyncio.to_thread(self.timers.load, time.time())
        await self.controller.prepare()

    def voice_chain(self, source: AudioSource) -> list[Task]:
        """The voice path's tasks: the source, then each stage; they end when the source does."""
        first: asyncio.Queue[Message] = asyncio.Queue(self.config.queues.audio)
        return self._chain(VOICE_STAGES, first, ("source", source.run(first, self.clock)))

    def text_chain(self, text: str) -> list[Task]:
        """The tasks that answer typed ``text`` as one turn (no audio in), then end."""

        async def feed(first: asyncio.Queue[Message]) -> None:
            self.clock.start()
            self.clock.ended()
            await self.ask(text)
            await first.put(EndOfStream())

        first: asyncio.Queue[Message] = asyncio.Queue(self.config.queues.text)
        return self._chain(TEXT_STAGES, first, ("source", feed(first)))

    def helpers(self) -> list[Task]:
        """Tasks that run beside the chain for as long as it runs: the acknowledgements, the
        timers, the heaps' trim when idle."""
        budget, output = self.controller.budget, self._output
        tasks: list[Task] = []
        if (budget.acks or budget.holds) and output is not None and self.clock.realtime:
            tasks.append(("budget", budget.run(output)))
        if self.timers is not None:
            tasks.append(("timers", self.timers.run(self.controller.announce)))
        if allocator.trims():
            tasks.append(("trim", allocator.trim_when_idle(self.controller.events.subscribe(16))))
        return tasks
