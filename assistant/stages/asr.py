"""ASR stage: ``Utterance`` in, ``Transcript`` out (or nothing, when it was not speech)."""

from __future__ import annotations

import logging
from functools import partial

from assistant.config import DeadlineConfig
from assistant.contracts import Transcriber
from assistant.messages import Message, SpeechStarted, Transcript, Utterance
from assistant.stages.base import Queue, call_in_thread, run_inbox
from assistant.turn.kinds import Mark
from assistant.turn.reports import Marked, NoSpeech, TurnChannel

_LOGGER = logging.getLogger(__name__)


class AsrStage:
    """Transcribes each utterance off the event loop; drops non-speech."""

    name = "asr"

    def __init__(
        self, engine: Transcriber, channel: TurnChannel, deadlines: DeadlineConfig | None = None
    ) -> None:
        self.engine = engine
        self.channel = channel
        self.deadlines = deadlines or DeadlineConfig()
        self.transcribed = 0
        self.no_speech = 0

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        async def handle(item: Message) -> None:
            if isinstance(item, SpeechStarted):
                self.channel.report(Marked(item.turn_id, Mark.SPEECH_START, item.start_ms))
            elif isinstance(item, Utterance):
                await self._transcribe(item, outbox)
            else:
                await outbox.put(item)

        await run_inbox(inbox, outbox, self.channel, handle, stage=self.name)

    async def _transcribe(self, utt: Utterance, outbox: Queue) -> None:
        turn_id, report = utt.turn_id, self.channel.report
        report(Marked(turn_id, Mark.SPEECH_START, utt.speech_start_ms))
        report(Marked(turn_id, Mark.SPEECH_END, utt.speech_end_ms))
        if not utt.speculative:
            report(Marked(turn_id, Mark.ENDPOINT, utt.endpoint_ms))
        result = await call_in_thread(
            partial(self.engine.transcribe, utt.pcm),
            stage=self.name,
            deadline_s=self.deadlines.asr_s,
            stop=self.channel.turns.stop_event(turn_id),
        )
        self.transcribed += 1
        if self.channel.turns.is_cancelled(turn_id):
            return
        if not result.text:
            self.no_speech += 1
            report(NoSpeech(turn_id))
            _LOGGER.info("turn %d: no speech in %.0f ms of audio", turn_id, result.audio_ms)
            return
        report(Marked(turn_id, Mark.TRANSCRIPT, self.channel.clock.position_ms()))
        _LOGGER.info("turn %d heard: %s", turn_id, result.text)
        text = self.channel.admit(turn_id, result.text)
        if text is None:  # not for the assistant (no wake phrase)
            return
        await outbox.put(Transcript(turn_id, text))
