"""The ASR stage's passes during speech (``asr.during_speech``): what runs, what was settled.

The VAD sends ``SpeechSoFar`` every ``asr.during_speech_every_ms`` of speech and at the first
unvoiced frame after speech (``quiet``). ``SpeechPasses.offer`` starts a pass on it in a task of
its own, in the background (``Transcriber.transcribe_timed(background=True)``: the engine puts
any other call first), when none is running; a quiet one that finds a pass running waits for it
(the latest only), as its audio may hold the whole utterance, and stops a pass on earlier
speech at its next step (``interrupt_background``): that pass would only have told the agreement
what the quiet one is about to hear, and the pause is when its transcript is wanted. Each pass's
words go to the utterance's ``Agreement``; its result is kept as the utterance's last.

At the pause the ASR stage asks ``ready(utterance)``: the result of a pass on the last quiet item
whose audio reaches the utterance's end of speech (nothing was said after it), if it is to be trusted,
waiting for it if it is still running: the transcript was made during the pause's wait. Else
it asks ``prefix(utterance)``: the words committed, which its decoder is given as a prefix.

The utterance is known by where its speech started: a speculation made void goes on under a
new turn id, with the same start, and keeps what its passes found.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field

from assistant.contracts import AsrResult, Transcriber
from assistant.endpointing.envelope import BLOCK_MS, FLOOR_MARGIN_DB, SPEECH_RANGE_DB, block_levels
from assistant.messages import SAMPLE_RATE, SpeechSoFar, Utterance
from assistant.stages.agreement import Agreement

_LOGGER = logging.getLogger(__name__)


@dataclass
class Spoken:
    """One utterance's passes."""

    speech_start_ms: float
    """Where its speech started (input timeline, ms): what identifies it across turn ids."""
    agreement: Agreement = field(default_factory=Agreement)
    last: tuple[SpeechSoFar, AsrResult] | None = None
    """The last pass that ran to its end, on what, and what it heard (trusted or not)."""


class SpeechPasses:
    """The passes of the utterance being spoken; at most one runs at a time."""

    def __init__(self, engine: Transcriber) -> None:
        self.engine = engine
        self.passes = 0
        """Passes that ran to their end."""
        self.ready_at_pause = 0
        """Utterances whose transcript a quiet pass had made (or was making) at the pause."""
        self._spoken: Spoken | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: SpeechSoFar | None = None
        self._waiting: SpeechSoFar | None = None
        self._quiet: SpeechSoFar | None = None
        """The latest quiet item offered: only a pass on it may hold all of the speech."""

    @property
    def running(self) -> bool:
        """A pass is running."""
        return self._task is not None and not self._task.done()

    def offer(self, item: SpeechSoFar) -> None:
        """Start a pass on ``item`` unless one is running (then a quiet ``item`` waits for it)."""
        if item.quiet:
            self._quiet = item
        if self.running:
            if item.quiet:
                self._waiting = item
                if self._running is not None and not self._running.quiet:
                    self.engine.interrupt_background()
            return
        self._start(item)

    def cancel(self) -> None:
        """Stop what runs or waits (the stage ends)."""
        self._waiting = None
        if self._task is not None:
            self._task.cancel()

    def _spoken_for(self, speech_start_ms: float) -> Spoken:
        if self._spoken is None or self._spoken.speech_start_ms != speech_start_ms:
            self._spoken = Spoken(speech_start_ms)
        return self._spoken

    def _start(self, item: SpeechSoFar) -> None:
        spoken = self._spoken_for(item.speech_start_ms)
        self._running = item
        self._task = asyncio.create_task(self._run(item, spoken), name="asr_pass")

    async def _run(self, item: SpeechSoFar, spoken: Spoken) -> None:
        """One pass; then the quiet one that waited, if any. A failure is only logged."""
        heard_ms = len(item.pcm) * 1000 / (2 * SAMPLE_RATE)
        prefix = spoken.agreement.prefix
        try:
            timed = await asyncio.to_thread(self.engine.transcribe_timed, item.pcm, prefix, background=True)
        except Exception as err:
            _LOGGER.warning("turn %d: a transcription during speech failed: %s", item.turn_id, err)
            timed = None
        if timed is not None:
            self.passes += 1
            spoken.last = (item, timed.result)
            if timed.result.fallback_reason:
                spoken.agreement.distrust()
            elif spoken.agreement.update(timed.words, heard_ms):
                _LOGGER.debug("turn %d: agreed on %r", item.turn_id, spoken.agreement.prefix)
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            self._start(waiting)

    def _covers(self, item: SpeechSoFar | None, utt: Utterance) -> bool:
        return (
            item is not None
            and item is self._quiet
            and item.speech_start_ms == utt.speech_start_ms
            and item.end_ms >= utt.speech_end_ms
            and not sounds_after(utt, item)
        )

    async def ready(self, utt: Utterance, timeout_s: float) -> AsrResult | None:
        """The transcript of a quiet pass over all of ``utt``'s speech, to be trusted, or None.
        Waits (at most ``timeout_s``) for such a pass still running; drops one still waiting."""
        self._waiting = None
        spoken = self._spoken
        if spoken is None or spoken.speech_start_ms != utt.speech_start_ms:
            return None
        task = self._task
        if task is not None and not task.done() and self._covers(self._running, utt):
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except TimeoutError:
                return None
        if spoken.last is None:
            return None
        item, result = spoken.last
        if not self._covers(item, utt) or not result.text or result.fallback_reason:
            return None
        if ends_repeating(result.text):
            _LOGGER.info("turn %d: the pass's transcript ends in a loop: %r", utt.turn_id, result.text)
            return None
        self.ready_at_pause += 1
        return result

    @property
    def agreed(self) -> str:
        """The words committed for the latest utterance (``""`` when none)."""
        return "" if self._spoken is None else self._spoken.agreement.prefix

    def prefix(self, utt: Utterance) -> str:
        """The words committed for ``utt`` (``""`` when none), as its transcript's beginning."""
        spoken = self._spoken
        if spoken is None or spoken.speech_start_ms != utt.speech_start_ms:
            return ""
        return spoken.agreement.prefix


def sounds_after(utt: Utterance, item: SpeechSoFar) -> bool:
    """True when ``utt``'s audio after ``item``'s end has a 10 ms block loud enough to be speech
    (as ``envelope.Envelope`` judges: within ``SPEECH_RANGE_DB`` of the utterance's loudest
    block and ``FLOOR_MARGIN_DB`` above its pre-roll's floor): a weak last sound ("lights" ending
    in a quiet "s") that webrtcvad called silence, which a pass on ``item`` did not hear."""
    levels = block_levels(utt.pcm)
    start_ms = item.end_ms - len(item.pcm) * 1000 / (2 * SAMPLE_RATE)  # where both pcm begin
    speech = max(0, int((utt.speech_start_ms - start_ms) // BLOCK_MS))
    after = int(len(item.pcm) * 1000 / (2 * SAMPLE_RATE) // BLOCK_MS)
    if not levels[speech:after] or after >= len(levels):
        return False
    floor = sorted(levels[:speech])[len(levels[:speech]) // 5] if speech else -90.0
    threshold = max(max(levels[speech:after]) - SPEECH_RANGE_DB, floor + FLOOR_MARGIN_DB)
    return max(levels[after:]) >= threshold


_WORDS = re.compile(r"[\w']+")


def ends_repeating(text: str) -> bool:
    """True when ``text`` ends with a run of two words or more said twice in a row ("who wrote
    Romeo and Juliet, and Juliet"): the short window's loop on audio cut close to the last
    word, which its own checks let through (they want a run three times over)."""
    words = [w.lower() for w in _WORDS.findall(text)]
    return any(words[-2 * n : -n] == words[-n:] for n in range(2, len(words) // 2 + 1))
