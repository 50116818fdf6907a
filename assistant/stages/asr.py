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
no further: no transcript, no intents, no LLM, no answer. In a turn that continued an ended one
(``Utterance.resumed``: "stop" right after one's own question), the new speech is the clip: it is
transcribed alone first, and the whole utterance only if it is not the stop word.
During speech (``asr.during_speech``, live input, an engine that is ``timed``): the VAD sends the
utterance so far (``SpeechSoFar``) as it grows and when the speech may have ended; the stage
hands it to ``passes.SpeechPasses``, which transcribes it in the background (a task of its own,
never awaited by the inbox loop, so a pass never holds up an utterance behind it; the engine
puts any other call first). At the pause the transcript is the one a pass made on all of the
speech when there is one to trust (it was made while the pause was being waited for); else
the utterance is transcribed with the words the passes agreed on (``agreement.Agreement``) as
its decoder's prefix, so only what follows them is decoded; when that result is not to be
trusted (or there is no prefix) the whole utterance is transcribed as it would be without
passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from assistant.config import DeadlineConfig
from assistant.contracts import AsrResult, Transcriber
from assistant.errors import StageTimeoutError
from assistant.intents.stopword import MAX_STOP_MS, is_stop
from assistant.messages import Message, SpeechSoFar, SpeechStarted, Transcript, Utterance
from assistant.stages.base import Queue, call_in_thread, run_inbox
from assistant.stages.passes import SpeechPasses
from assistant.turn.kinds import Mark
from assistant.turn.reports import Marked, NoSpeech, StopWordHeard, TurnChannel, Unheard

_LOGGER = logging.getLogger(__name__)

R = TypeVar("R")


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
        *,
        during_speech: bool = False,
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
        self.during_speech = during_speech
        """``asr.during_speech``: transcribe ``SpeechSoFar`` in the background (live input only)."""
        self.passes = SpeechPasses(engine)
        """The passes during speech."""
        self.prefixed = 0
        """Utterances transcribed from words committed during speech."""
        self.prefix_rejected = 0
        """Utterances whose transcription from the committed words was not trusted (redone whole)."""

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        async def handle(item: Message) -> None:
            if isinstance(item, SpeechStarted):
                self.channel.report(Marked(item.turn_id, Mark.SPEECH_START, item.start_ms))
            elif isinstance(item, SpeechSoFar):
                self._start_pass(item)
            elif isinstance(item, Utterance):
                await self._transcribe(item, outbox)
            else:
                await outbox.put(item)

        try:
            await run_inbox(inbox, outbox, self.channel, handle, stage=self.name)
        finally:
            self.passes.cancel()

    @property
    def passing(self) -> bool:
        """A pass during speech is running."""
        return self.passes.running

    def _start_pass(self, item: SpeechSoFar) -> None:
        """Transcribe the utterance so far in the background (``passes.SpeechPasses``)."""
        if self.during_speech and self.engine.timed and self.channel.clock.realtime:
            self.passes.offer(item)

    async def _transcribe(self, utt: Utterance, outbox: Queue) -> None:
        turn_id, report = utt.turn_id, self.channel.report
        report(Marked(turn_id, Mark.SPEECH_START, utt.speech_start_ms))
        report(Marked(turn_id, Mark.SPEECH_END, utt.speech_end_ms))
        if not utt.speculative:
            report(Marked(turn_id, Mark.ENDPOINT, utt.endpoint_ms))
        wanted = self._wanted_by(utt.speech_end_ms)
        try:
            if utt.resumed is not None and self._stop_word(utt):  # the new speech alone first
                clip = partial(self.engine.transcribe, utt.pcm[utt.resumed.offset :], wanted)
                said = await self._in_thread(turn_id, wanted, clip)
                if said.text and is_stop(said.text, self.language):
                    self._stop_heard(turn_id, said.text)
                    return
            result = await self._recognise(utt, wanted)
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
        if utt.resumed is None and self._stop_word(utt) and is_stop(result.text, self.language):
            self._stop_heard(turn_id, result.text)
            return
        report(Marked(turn_id, Mark.TRANSCRIPT, self.channel.clock.position_ms()))
        _LOGGER.info("turn %d heard: %s", turn_id, result.text)
        text = self.channel.admit(turn_id, result.text)
        if text is None:  # not for the assistant (no wake phrase)
            return
        await outbox.put(Transcript(turn_id, text))

    async def _recognise(self, utt: Utterance, wanted: float | None) -> AsrResult:
        """The utterance's words: a pass's that heard all of its speech, when there is one to
        trust; else decoded from the words committed during speech, when there are some and the
        result can be trusted; otherwise the whole utterance, as without passes."""
        live = self.during_speech and self.channel.clock.realtime
        if live:
            left_s = self.deadlines.asr_s if wanted is None else max(0.0, wanted - time.monotonic())
            ready = await self.passes.ready(utt, left_s)
            if ready is not None:
                return ready
        prefix = self.passes.prefix(utt) if live else ""
        if prefix:
            timed = await self._in_thread(
                utt.turn_id, wanted, partial(self.engine.transcribe_timed, utt.pcm, prefix, times=False)
            )
            if timed is not None and timed.result.text and not timed.result.fallback_reason:
                self.prefixed += 1
                return timed.result
            self.prefix_rejected += 1
            _LOGGER.info(
                "turn %d: the transcript from %r not trusted (%s); the whole utterance again",
                utt.turn_id,
                prefix,
                "none" if timed is None else timed.result.fallback_reason or "empty",
            )
        return await self._in_thread(utt.turn_id, wanted, partial(self.engine.transcribe, utt.pcm, wanted))

    async def _in_thread(self, turn_id: int, wanted: float | None, work: Callable[[], R]) -> R:
        hard_s = self.deadlines.asr_s
        return await call_in_thread(
            work,
            stage=self.name,
            deadline_s=hard_s if wanted is None else min(hard_s, max(0.0, wanted - time.monotonic())),
            stop=self.channel.turns.stop_event(turn_id),
        )

    def _stop_word(self, utt: Utterance) -> bool:
        """The utterance may be the stop word: short, and begun while the speaker played (in a
        turn that continued an ended one, the new speech: "stop" said right after a question)."""
        start = utt.speech_start_ms if utt.resumed is None else utt.resumed.start_ms
        return self.stop_word and utt.over_playback and utt.speech_end_ms - start <= MAX_STOP_MS

    def _stop_heard(self, turn_id: int, text: str) -> None:
        self.stop_words += 1
        _LOGGER.info("turn %d: the stop word (%s)", turn_id, text)
        self.channel.report(StopWordHeard(turn_id, text))

    def _wanted_by(self, speech_end_ms: float) -> float | None:
        """When (``time.monotonic()``) the transcript is due, on live input; None otherwise."""
        clock = self.channel.clock
        if not self.transcript_ms or not clock.realtime:
            return None
        # a transcription that starts late (an utterance with no speculation, sent at its endpoint)
        # still gets transcript_ms of its own: only a real overrun is abandoned
        left_ms = max(speech_end_ms + self.transcript_ms - clock.position_ms(), self.transcript_ms)
        return time.monotonic() + left_ms / 1000
