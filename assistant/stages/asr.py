"""ASR stage: ``Utterance`` in, ``Transcript`` out (or nothing, when it was not speech)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from assistant.clock import StreamClock
from assistant.engines.whisper import AsrResult
from assistant.errors import AssistantError
from assistant.messages import Message, SpeechStarted, Transcript, Utterance
from assistant.stages.base import Queue, run_inbox
from assistant.turn.latency import LatencyTracker
from assistant.turn.registry import Turns

_LOGGER = logging.getLogger(__name__)


class Transcriber(Protocol):
    def transcribe(self, pcm: bytes) -> AsrResult: ...


class AsrStage:
    """Transcribes each utterance off the event loop; drops non-speech."""

    def __init__(
        self,
        engine: Transcriber,
        turns: Turns,
        tracker: LatencyTracker,
        clock: StreamClock,
        on_transcript: Callable[[Transcript], Transcript | None] | None = None,
        on_error: Callable[[int, AssistantError], None] | None = None,
        on_no_speech: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.on_no_speech = on_no_speech
        self.turns = turns
        self.tracker = tracker
        self.clock = clock
        self.on_transcript = on_transcript
        self.on_error = on_error
        self.transcribed = 0
        self.no_speech = 0

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        async def handle(item: Message) -> None:
            if isinstance(item, SpeechStarted):
                self.tracker.record(item.turn_id).mark("speech_start", item.start_ms)
            elif isinstance(item, Utterance):
                await self._transcribe(item, outbox)
            else:
                await outbox.put(item)

        await run_inbox(inbox, outbox, self.turns, handle)

    async def _transcribe(self, utt: Utterance, outbox: Queue) -> None:
        rec = self.tracker.record(utt.turn_id)
        rec.mark("speech_start", utt.speech_start_ms)
        rec.mark("speech_end", utt.speech_end_ms)
        if not utt.speculative:
            rec.mark("endpoint", utt.endpoint_ms)
        try:
            result = await asyncio.to_thread(self.engine.transcribe, utt.pcm)
        except AssistantError as err:
            _LOGGER.error("turn %d: %s: %s", utt.turn_id, err.code, err.message)
            if self.on_error is not None:
                self.on_error(utt.turn_id, err)
            return
        self.transcribed += 1
        if self.turns.is_cancelled(utt.turn_id):
            return
        if not result.text:
            self.no_speech += 1
            self.tracker.discard(utt.turn_id)
            if self.on_no_speech is not None:
                self.on_no_speech(utt.turn_id)
            _LOGGER.info("turn %d: no speech in %.0f ms of audio", utt.turn_id, result.audio_ms)
            return
        rec.mark("transcript", self.clock.position_ms())
        rec.transcript = result.text
        _LOGGER.info("turn %d heard: %s", utt.turn_id, result.text)
        heard = Transcript(utt.turn_id, result.text)
        transcript = self.on_transcript(heard) if self.on_transcript is not None else heard
        if transcript is None:  # not for the assistant (no wake phrase)
            self.tracker.discard(utt.turn_id)
            return
        await outbox.put(transcript)
