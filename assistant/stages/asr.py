"""ASR stage: ``Utterance`` in, ``Transcript`` out (or nothing, when it was not speech).

On live input the transcript has a deadline, ``latency.transcript_ms`` after the end of speech
(or after the transcription starts, if that is later: an utterance sent at its endpoint): the
engine skips a second pass that would end later, and a transcription still running then is
abandoned. A turn left with no usable words (words heard but rejected, with no time to redo them
on the full window, or no result at all) is reported ``Unheard``: the controller asks the user to
say it again, rather than leaving them in silence. Where the short window heard nothing at all
(``empty``: a noise, most often) the turn is no speech, as the full window would most often find.

The stop word (``listen.stop_word``): an utterance whose speech began while the speaker played
and lasted at most ``stopword.MAX_STOP_MS`` is checked, once transcribed (Whisper on that clip
alone, at the first pause), against the stop phrases (``intents/stopword.py``). If it is one,
the controller hears ``StopWordHeard`` (what plays stops, alarms are silenced) and the turn goes
no further: no transcript, no intents, no LLM, no answer.
"""

from __future__ import annotations

import logging
import time
from functools import partial

from assistant.config import DeadlineConfig
from assistant.contracts import Transcriber
from assistant.errors import StageTimeoutError
from assistant.intents.stopword import MAX_STOP_MS, is_stop
from assistant.messages import Message, SpeechStarted, Transcript, Utterance
from assistant.stages.base import Queue, call_in_thread, run_inbox
from assistant.turn.kinds import Mark
from assistant.turn.reports import Marked, NoSpeech, StopWordHeard, TurnChannel, Unheard

_LOGGER = logging.getLogger(__name__)


class AsrStage:
    """Transcribes each utterance off the event loop; drops non-speech."""

    name = "asr"

    def __init__(
        self,
        engine: Transcriber,
        channel: TurnChannel,
        deadlines: DeadlineConfig | None = None,
        transcript_ms: int = 0,
        stop_word: bool = False,
        language: str = "en",
    ) -> None:
        self.engine = engine
        self.channel = channel
        self.deadlines = deadlines or DeadlineConfig()
        self.transcript_ms = transcript_ms
        """``latency.transcript_ms``: live input's transcript deadline after the end of speech; 0: none."""
        self.stop_word = stop_word
        """``listen.stop_word``: short utterances over playback are checked for the stop word."""
        self.language = language
        """The stop phrases' language."""
        self.stop_words = 0
        """Utterances that were the stop word."""
        self.transcribed = 0
        self.no_speech = 0
        self.unheard = 0
        """Turns with no usable transcript in time (the user was asked to repeat)."""

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
        hard_s, wanted = self.deadlines.asr_s, self._wanted_by(utt.speech_end_ms)
        try:
            result = await call_in_thread(
                partial(self.engine.transcribe, utt.pcm, wanted),
                stage=self.name,
                deadline_s=hard_s if wanted is None else min(hard_s, max(0.0, wanted - time.monotonic())),
                stop=self.channel.turns.stop_event(turn_id),
            )
        except StageTimeoutError:
            if wanted is None or self.channel.turns.is_cancelled(turn_id):
                raise
            self.unheard += 1
            report(Unheard(turn_id, "late"))
            _LOGGER.info("turn %d: no transcript %d ms after the end of speech", turn_id, self.transcript_ms)
            return
        self.transcribed += 1
        if self.channel.turns.is_cancelled(turn_id):
            return
        if not result.text and result.hurried and result.fallback_reason != "empty":
            self.unheard += 1
            report(Unheard(turn_id, result.fallback_reason))
            return
        if not result.text:
            self.no_speech += 1
            report(NoSpeech(turn_id))
            _LOGGER.info("turn %d: no speech in %.0f ms of audio", turn_id, result.audio_ms)
            return
        if self._stop_word(utt) and is_stop(result.text, self.language):
            self.stop_words += 1
            _LOGGER.info("turn %d: the stop word (%s)", turn_id, result.text)
            report(StopWordHeard(turn_id, result.text))
            return
        report(Marked(turn_id, Mark.TRANSCRIPT, self.channel.clock.position_ms()))
        _LOGGER.info("turn %d heard: %s", turn_id, result.text)
        text = self.channel.admit(turn_id, result.text)
        if text is None:  # not for the assistant (no wake phrase)
            return
        await outbox.put(Transcript(turn_id, text))

    def _stop_word(self, utt: Utterance) -> bool:
        """The utterance may be the stop word: short, and begun while the speaker played."""
        return self.stop_word and utt.over_playback and utt.speech_end_ms - utt.speech_start_ms <= MAX_STOP_MS

    def _wanted_by(self, speech_end_ms: float) -> float | None:
        """When (``time.monotonic()``) the transcript is due, on live input; None otherwise."""
        clock = self.channel.clock
        if not self.transcript_ms or not clock.realtime:
            return None
        # a transcription that starts late (an utterance with no speculation, sent at its endpoint)
        # still gets transcript_ms of its own: only a real overrun is abandoned
        left_ms = max(speech_end_ms + self.transcript_ms - clock.position_ms(), self.transcript_ms)
        return time.monotonic() + left_ms / 1000
