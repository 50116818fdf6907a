"""ASR stage: ``Utterance`` in, ``Transcript`` out (or nothing, when it was not speech).

On live input the transcript has a deadline, ``latency.transcript_ms`` after the end of speech
(or after the transcription starts, if that is later: an utterance sent at its endpoint): the
engine skips a second pass that would end later, and a transcription still running then is
abandoned. A turn left with no usable words (words heard but rejected, with no time to redo them
on the full window, or no result at all) is reported ``Unheard``: the controller asks the user to
say it again, rather than leaving them in silence. Where the short window heard nothing at all
(``empty``: a noise, most often) the turn is no speech, as the full window would most often find.

During speech (``asr.during_speech``, live input, an engine that is ``timed``): the VAD sends the
utterance so far (``SpeechSoFar``) every ``asr.during_speech_every_ms`` of speech; when no pass
is running the stage transcribes it in the background (a task of its own, never awaited by the
inbox loop, so a pass never holds up an utterance behind it), and the engine gives way to any
other call between the pass's steps. Words that two consecutive passes agree on are committed
(``agreement.Agreement``) and given to the next pass as its decoder's prefix. At the pause the
utterance is transcribed with the committed words as its prefix, so only what follows them is
decoded; when that result is not to be trusted (or there is no prefix) the whole utterance is
transcribed as it would be without passes. The utterance is known by where its speech started:
a speculation made void goes on under a new turn id with the same start, and keeps its words.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from assistant.config import DeadlineConfig
from assistant.contracts import AsrResult, Transcriber
from assistant.errors import StageTimeoutError
from assistant.messages import SAMPLE_RATE, Message, SpeechSoFar, SpeechStarted, Transcript, Utterance
from assistant.stages.agreement import Agreement
from assistant.stages.base import Queue, call_in_thread, run_inbox
from assistant.turn.kinds import Mark
from assistant.turn.reports import Marked, NoSpeech, TurnChannel, Unheard

_LOGGER = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass
class Spoken:
    """The utterance being transcribed during speech."""

    speech_start_ms: float
    """Where its speech started (input timeline, ms): what identifies it across turn ids."""
    agreement: Agreement = field(default_factory=Agreement)
    heard_ms: float = 0.0
    """Audio (ms) the last pass started on."""


class AsrStage:
    """Transcribes each utterance off the event loop; drops non-speech."""

    name = "asr"

    def __init__(
        self,
        engine: Transcriber,
        channel: TurnChannel,
        deadlines: DeadlineConfig | None = None,
        transcript_ms: int = 0,
        *,
        during_speech: bool = False,
    ) -> None:
        self.engine = engine
        self.channel = channel
        self.deadlines = deadlines or DeadlineConfig()
        self.transcript_ms = transcript_ms
        """``latency.transcript_ms``: live input's transcript deadline after the end of speech; 0: none."""
        self.transcribed = 0
        self.no_speech = 0
        self.unheard = 0
        """Turns with no usable transcript in time (the user was asked to repeat)."""
        self.during_speech = during_speech
        """``asr.during_speech``: transcribe ``SpeechSoFar`` in the background (live input only)."""
        self.passes = 0
        """Passes during speech that ran to their end."""
        self.prefixed = 0
        """Utterances transcribed from words committed during speech."""
        self.prefix_rejected = 0
        """Utterances whose transcription from the committed words was not trusted (redone whole)."""
        self._spoken: Spoken | None = None
        self._pass: asyncio.Task[None] | None = None

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
            if self._pass is not None:
                self._pass.cancel()

    @property
    def passing(self) -> bool:
        """A pass during speech is running."""
        return self._pass is not None and not self._pass.done()

    def _start_pass(self, item: SpeechSoFar) -> None:
        """Transcribe the utterance so far in the background, unless a pass is running."""
        if not (self.during_speech and self.engine.timed and self.channel.clock.realtime) or self.passing:
            return
        spoken = self._spoken_for(item.speech_start_ms)
        spoken.heard_ms = len(item.pcm) * 1000 / (2 * SAMPLE_RATE)
        self._pass = asyncio.create_task(self._run_pass(item, spoken), name="asr_pass")

    def _spoken_for(self, speech_start_ms: float) -> Spoken:
        if self._spoken is None or self._spoken.speech_start_ms != speech_start_ms:
            self._spoken = Spoken(speech_start_ms)
        return self._spoken

    async def _run_pass(self, item: SpeechSoFar, spoken: Spoken) -> None:
        """One pass: its words go to the agreement. Its failure is only logged (never the turn's)."""
        heard_ms = spoken.heard_ms
        try:
            timed = await asyncio.to_thread(
                self.engine.transcribe_timed, item.pcm, spoken.agreement.prefix, background=True
            )
        except asyncio.CancelledError:
            raise
        except Exception as err:
            _LOGGER.warning("turn %d: a transcription during speech failed: %s", item.turn_id, err)
            return
        if timed is None:  # it gave way
            return
        self.passes += 1
        if timed.result.fallback_reason:
            spoken.agreement.distrust()
            return
        fresh = spoken.agreement.update(timed.words, heard_ms)
        if fresh:
            _LOGGER.debug(
                "turn %d: agreed on %r after %.0f ms", item.turn_id, spoken.agreement.prefix, heard_ms
            )

    async def _transcribe(self, utt: Utterance, outbox: Queue) -> None:
        turn_id, report = utt.turn_id, self.channel.report
        report(Marked(turn_id, Mark.SPEECH_START, utt.speech_start_ms))
        report(Marked(turn_id, Mark.SPEECH_END, utt.speech_end_ms))
        if not utt.speculative:
            report(Marked(turn_id, Mark.ENDPOINT, utt.endpoint_ms))
        wanted = self._wanted_by(utt.speech_end_ms)
        try:
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
        report(Marked(turn_id, Mark.TRANSCRIPT, self.channel.clock.position_ms()))
        _LOGGER.info("turn %d heard: %s", turn_id, result.text)
        text = self.channel.admit(turn_id, result.text)
        if text is None:  # not for the assistant (no wake phrase)
            return
        await outbox.put(Transcript(turn_id, text))

    async def _recognise(self, utt: Utterance, wanted: float | None) -> AsrResult:
        """The utterance's words: from those committed during speech when there are some and
        the result can be trusted; otherwise the whole utterance, as without passes."""
        spoken = self._spoken
        prefix = ""
        if spoken is not None and spoken.speech_start_ms == utt.speech_start_ms and self.during_speech:
            prefix = spoken.agreement.prefix
        if prefix and self.channel.clock.realtime:
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

    def _wanted_by(self, speech_end_ms: float) -> float | None:
        """When (``time.monotonic()``) the transcript is due, on live input; None otherwise."""
        clock = self.channel.clock
        if not self.transcript_ms or not clock.realtime:
            return None
        # a transcription that starts late (an utterance with no speculation, sent at its endpoint)
        # still gets transcript_ms of its own: only a real overrun is abandoned
        left_ms = max(speech_end_ms + self.transcript_ms - clock.position_ms(), self.transcript_ms)
        return time.monotonic() + left_ms / 1000
