"""The daemon as an Assist satellite: its microphone and speaker lent to Home Assistant.

Home Assistant's Wyoming integration connects to a satellite and sends ``run-satellite``; from
then on the satellite streams what it hears after its wake or activation and plays what comes
back. How the microphone and the sink are shared with the local pipeline:

- **The microphone goes one way at a time.** ``MicrophoneTap`` sits between the audio source and
  the pipeline. While a satellite session runs, each piece of microphone audio goes to the
  session and the pipeline hears silence in its place (the same length, so its clock and VAD go
  on): the local ASR, LLM and TTS answer nothing, Home Assistant's Assist pipeline answers
  instead. When the session ends (``pause-satellite``, the client goes, another client takes
  over), the pipeline hears the microphone again. Muting the assistant (MQTT ``mute``) mutes
  both ways.
- **The turns are the pipeline's endpointer's.** The session runs its own ``VadStage`` with the
  pipeline's ``[vad]`` (speculation off: Home Assistant transcribes once) and, with a live
  speaker, the same echo gate. At the start of speech it sends ``detection`` (name ``speech``,
  or ``push`` in push-to-talk mode, so Home Assistant keeps one of several satellites that
  heard the same words), ``run-pipeline`` (from ``asr`` to ``tts``; in ``listen.mode = "wake"``
  from Home Assistant's ``wake`` stage, whose wake word engine then listens for the wake word),
  ``voice-started``, ``audio-start`` and the audio from the pre-roll on; then every piece live.
  At the endpoint: ``voice-stopped`` and ``audio-stop``, which ends Home Assistant's
  speech-to-text at once. Its ``transcript``, ``voice-stopped`` or ``error`` stop the streaming
  earlier. In push-to-talk mode the microphone closes again after each run.
- **Replies play on the pipeline's sink.** ``audio-start``, ``audio-chunk``..., ``audio-stop``
  from Home Assistant (a reply or an announcement) are written to the sink as they come (each
  write under ``deadlines.output_s``), then ``played`` is sent. Speech during a reply
  interrupts it (barge-in). The local path is silent meanwhile, so nothing else plays; an MQTT
  ``say`` during a reply would play over it.

One session at a time; a newer ``run-satellite`` takes the microphone over. Queues are bounded
and drop with a counter: ``MIC_QUEUE`` pieces of microphone audio, ``PLAYBACK_QUEUE`` events of
reply audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from assistant.audio.sources import AudioSource, IdleSource
from assistant.clock import StreamClock
from assistant.endpointing.echo import gate_for
from assistant.messages import SAMPLE_RATE, AudioIn, EndOfStream, Message, SpeechStarted
from assistant.stages.vad import VadStage
from assistant.turn.reports import EndpointFinal, ReportLog, SpeechBegan
from assistant.wyoming.audio import PcmConverter, audio_format
from assistant.wyoming.protocol import EventError, WireEvent
from assistant.wyoming.services import Link

if TYPE_CHECKING:
    from assistant.pipeline import Pipeline

_LOGGER = logging.getLogger(__name__)

MIC_QUEUE = 100
"""Pieces of microphone audio (2 s of 20 ms pieces) waiting for the session; more are dropped."""
PLAYBACK_QUEUE = 2048
"""Reply events waiting to be played (about 90 s of Home Assistant's 1,024-sample chunks)."""
PREROLL_EXTRA_MS = 300
"""Audio kept before a turn's start beyond ``vad.preroll_ms`` + ``vad.start_ms``."""
MIC_FORMAT = {"rate": SAMPLE_RATE, "width": 2, "channels": 1}
REPLY_EVENTS = ("audio-start", "audio-chunk", "audio-stop")


class SatelliteHub:
    """The microphone and sink shared between the pipeline and one satellite session."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.session: Satellite | None = None
        self.tapped = False
        """A microphone source was tapped (``tap``)."""

    @property
    def available(self) -> bool:
        """A satellite can be offered: the microphone is tapped and replies have a sink."""
        return self.tapped and self.pipeline.sink is not None

    def tap(self, source: AudioSource) -> AudioSource:
        """``source`` with its audio routed through the hub (an ``IdleSource`` is no microphone)."""
        if isinstance(source, IdleSource):
            return source
        self.tapped = True
        return MicrophoneTap(source, self)

    def route(self, item: AudioIn) -> AudioIn:
        """One piece of microphone audio: the session's while one runs (the pipeline then hears
        silence), else the pipeline's."""
        session = self.session
        if session is None:
            return item
        silence = AudioIn(bytes(len(item.pcm)), item.start_ms, item.arrived_ns)
        session.offer(silence if self.pipeline.muted else item)  # muted: a run ends as in a quiet room
        return silence

    def start(self, link: Link) -> Satellite:
        """A client sent ``run-satellite``: its session takes the microphone (over an older one)."""
        old, self.session = self.session, Satellite(self, link)
        if old is not None:
            _LOGGER.info("wyoming: a newer client takes the satellite over")
            old.cancel()
        return self.session

    def end(self, session: Satellite) -> None:
        """The session is over (paused, disconnected): the pipeline hears the microphone again."""
        if self.session is session:
            self.session = None
            _LOGGER.info("wyoming: satellite session ended; the microphone is the pipeline's again")


class MicrophoneTap:
    """An ``AudioSource`` that runs another and routes its audio through a ``SatelliteHub``."""

    def __init__(self, source: AudioSource, hub: SatelliteHub) -> None:
        self.source = source
        self.hub = hub

    async def run(self, outbox: asyncio.Queue[Message], clock: StreamClock) -> None:
        inner: asyncio.Queue[Message] = asyncio.Queue(outbox.maxsize)
        async with asyncio.TaskGroup() as group:
            group.create_task(self.source.run(inner, clock), name="microphone")
            while True:
                item = await inner.get()
                await outbox.put(self.hub.route(item) if isinstance(item, AudioIn) else item)
                if isinstance(item, EndOfStream):
                    return


class Satellite:
    """One client's satellite session: streams runs to it and plays what it sends back."""

    def __init__(self, hub: SatelliteHub, link: Link) -> None:
        self.hub, self.link = hub, link
        self.pipeline = hub.pipeline
        self.mic: asyncio.Queue[AudioIn] = asyncio.Queue(MIC_QUEUE)
        self.playback: asyncio.Queue[WireEvent] = asyncio.Queue(PLAYBACK_QUEUE)
        self.dropped = 0
        """Microphone pieces and reply events dropped because a queue was full."""
        self.runs = 0
        """Runs started (each a ``run-pipeline``)."""
        self.task: asyncio.Task[None] | None = None
        """The connection's task that runs this session (``run``)."""
        self._log = ReportLog(hub.pipeline.clock)
        self._ring = bytearray()
        self._turn: int | None = None
        self._forward = False
        self._playing = False
        self._cut = False

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def offer(self, item: AudioIn) -> None:
        """A piece of microphone audio (never blocks: dropped when the session is behind)."""
        try:
            self.mic.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    async def from_client(self, event: WireEvent) -> None:
        """An event from Home Assistant while the session runs."""
        if event.type in REPLY_EVENTS:
            try:
                self.playback.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped += 1
        elif event.type in ("transcript", "voice-stopped", "error"):
            self._forward = False  # Home Assistant heard enough of this run

    async def run(self) -> None:
        """Listen and play until cancelled; the microphone is the pipeline's again after."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._listen(), name="satellite-listen")
                group.create_task(self._play(), name="satellite-play")
        finally:
            self.hub.end(self)

    # -- the microphone ------------------------------------------------------------------------

    async def _listen(self) -> None:
        config = self.pipeline.config
        vad = VadStage(replace(config.vad, speculate_after_ms=0), self._log)
        speaker = self.pipeline.speaker
        if speaker is not None:
            vad.echo_gate = gate_for(speaker, config.listen.echo_margin_db)
        ring_bytes = (config.vad.preroll_ms + config.vad.start_ms + PREROLL_EXTRA_MS) * SAMPLE_RATE // 500
        while True:
            item = await self.mic.get()
            self._ring += item.pcm
            del self._ring[: max(0, len(self._ring) - ring_bytes)]
            start_ms = next(
                (m.start_ms for m in vad.feed(item) if isinstance(m, SpeechStarted)), item.start_ms
            )
            reports, self._log.reports = self._log.reports, []
            sent = False
            for report in reports:
                if isinstance(report, SpeechBegan):
                    await self._begin(report.turn_id, start_ms)
                    sent = True
                elif isinstance(report, EndpointFinal):
                    await self._end(report.speech_end_ms)
            if self._turn is not None and self._log.turns.is_cancelled(self._turn):
                await self._end(None)  # too little speech: a cough, a door
            elif self._forward and not sent:
                await self.link.send(
                    WireEvent("audio-chunk", {**MIC_FORMAT, "timestamp": int(item.start_ms)}, item.pcm)
                )

    async def _begin(self, turn_id: int, start_ms: float) -> None:
        """Speech started: a run begins, with the audio from the pre-roll on."""
        if self._playing:
            self._interrupt()
        mode = self.pipeline.config.listen.mode
        self._turn, self._forward = turn_id, True
        self.runs += 1
        at = int(start_ms)
        events = (
            []
            if mode == "wake"
            else [WireEvent("detection", {"name": mode if mode == "push" else "speech", "timestamp": at})]
        )
        events += [
            WireEvent(
                "run-pipeline",
                {
                    "start_stage": "wake" if mode == "wake" else "asr",
                    "end_stage": "tts",
                    "restart_on_end": False,
                },
            ),
            WireEvent("voice-started", {"timestamp": at}),
            WireEvent("audio-start", {**MIC_FORMAT, "timestamp": at}),
            WireEvent("audio-chunk", {**MIC_FORMAT, "timestamp": at}, bytes(self._ring)),
        ]
        await self.link.send(*events)

    async def _end(self, speech_end_ms: float | None) -> None:
        """The endpoint (or a dropped turn, ``None``): the run's audio ends."""
        at = {"timestamp": int(speech_end_ms)} if speech_end_ms is not None else {}
        self._turn, self._forward = None, False
        await self.link.send(WireEvent("voice-stopped", at), WireEvent("audio-stop", at))
        if self.pipeline.config.listen.mode == "push":
            self.pipeline.set_muted(True)  # push-to-talk: one run per push

    # -- the speaker ---------------------------------------------------------------------------

    def _interrupt(self) -> None:
        """Barge-in: the reply playing stops; its remaining audio is skipped."""
        self._cut = True
        if self.pipeline.speaker is not None:
            self.pipeline.speaker.interrupt()

    async def _play(self) -> None:
        sink, converter = self.pipeline.sink, PcmConverter(SAMPLE_RATE)
        fmt: dict[str, object] = {}
        while True:
            event = await self.playback.get()
            if event.type == "audio-start":
                fmt = {k: event.data.get(k) for k in ("rate", "width", "channels")}
                self._playing, self._cut = True, False
                continue
            if event.type == "audio-stop":
                if sink is not None:  # after a barge-in too: the sink closes the reply it has
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(sink.turn_done(), self.pipeline.config.deadlines.output_s)
                self._playing = False
                await self.link.send(WireEvent("played"))
                continue
            if sink is None or self._cut:
                continue
            try:
                chunk_format = audio_format({**fmt, **event.data}, "audio-chunk")
            except EventError as err:
                await self.link.refuse(err.code, err.message)
                continue
            if converter.rate != chunk_format.rate:
                converter = PcmConverter(chunk_format.rate)
            pcm = converter.convert(event.payload, chunk_format)
            try:
                await asyncio.wait_for(
                    sink.write(pcm, chunk_format.rate), self.pipeline.config.deadlines.output_s
                )
            except Exception as err:
                _LOGGER.warning("wyoming: the reply could not be played: %r; the rest is skipped", err)
                self._cut = True
