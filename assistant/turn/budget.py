"""The latency budget at run time: acknowledgements when the answer would be late.

The pipeline tells the keeper when a turn's endpoint is final (``committed``), when marks are
set and when turns close; ``run()`` (a task in the pipeline's TaskGroup) waits for each
committed turn's due time (``BudgetPolicy.ack_due_ms``) and, if the turn is speech (it has a
transcript: noise, which ASR tells apart quickly, gets no acknowledgement) and nothing has been
heard yet, plays one of the acknowledgements synthesized at start-up. A transcript still
missing at the last call (a slow ASR) does not hold the acknowledgement back. An answer whose
first chunk is already being synthesized and is expected in time (``TurnRecord.answer_eta_ms``,
from the ``SynthesisRate`` that the acknowledgements calibrate and the TTS stage keeps learning)
is not delayed by an acknowledgement; it gets one at the last call only if it is still not
heard. Every action is counted by the tracker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from assistant.audio.convert import trim_silence
from assistant.clock import StreamClock
from assistant.config import LatencyConfig
from assistant.contracts import Synthesizer
from assistant.errors import AssistantError
from assistant.turn.kinds import Action, Mark
from assistant.turn.latency import BudgetPolicy, LatencyTracker, SynthesisRate

_LOGGER = logging.getLogger(__name__)


HOLD_SPARE_MS = 300.0
"""An answer expected to start playing within this long gets no holding phrase."""


class AckPlayer(Protocol):
    """Plays an acknowledgement for a turn (the output stage)."""

    async def play_ack(self, turn_id: int, pcm: bytes, rate: int, *, answered_only: bool = False) -> bool:
        """Play it unless the turn has been heard already (``answered_only``: unless its answer
        has); False if too late."""
        ...


def policy_for(config: LatencyConfig) -> BudgetPolicy:
    stage_budgets = (
        ("asr", float(config.asr_ms)),
        ("llm_first_token", float(config.llm_first_token_ms)),
        ("tts_first_audio", float(config.tts_first_audio_ms)),
    )
    return BudgetPolicy(float(config.budget_ms), float(config.ack_margin_ms), stage_budgets)


def synthesize_all(tts: Synthesizer, text: str) -> bytes:
    parts: list[bytes] = []
    tts.synthesize(text, parts.append)
    return b"".join(parts)


class BudgetKeeper:
    """Plays acknowledgements so that the user hears something within the budget."""

    def __init__(self, config: LatencyConfig, tracker: LatencyTracker, clock: StreamClock) -> None:
        self.config = config
        self.policy = policy_for(config)
        self.tracker = tracker
        self.clock = clock
        self.acks: list[tuple[bytes, int]] = []
        """Pre-synthesized acknowledgements: (int16 pcm, sample rate)."""
        self.holds: list[tuple[bytes, int]] = []
        """Pre-synthesized holding phrases (``latency.holds``), for an answer past ``hold_ms``."""
        self.rate = SynthesisRate()
        """Synthesis time per character: calibrated by the acknowledgements, then by the TTS stage."""
        self._next = 0
        self._next_hold = 0
        self._due: asyncio.Queue[tuple[int, float, bool]] = asyncio.Queue()
        """(turn, input-timeline position, True for the hold deadline rather than the ack's)."""
        self._heard: dict[int, asyncio.Event] = {}

    def reconfigure(self, config: LatencyConfig) -> None:
        """New budgets and switches; the phrases already synthesized stay."""
        self.config = config
        self.policy = policy_for(config)

    async def prepare(self, tts: Synthesizer) -> None:
        """Synthesize the acknowledgements and holding phrases once, before listening. A voice that
        cannot (a remote server that is down) leaves the daemon without them, with a warning."""
        if not self.acks and self.config.ack:
            self.acks = await self._phrases(tts, self.config.acks, calibrate=True)
        if not self.holds and self.config.hold_ms:
            self.holds = await self._phrases(tts, self.config.holds, calibrate=False)

    async def _phrases(
        self, tts: Synthesizer, texts: tuple[str, ...], *, calibrate: bool
    ) -> list[tuple[bytes, int]]:
        phrases = []
        for text in texts:
            if not text.strip():
                continue
            start = time.perf_counter()
            try:
                pcm = await asyncio.to_thread(synthesize_all, tts, text)
            except AssistantError as err:
                _LOGGER.warning("%r skipped: the voice failed: [%s] %s", text, err.code, err.message)
                return []
            if calibrate:
                self.rate.observe(len(text), (time.perf_counter() - start) * 1000)
            # the voice's trailing silence would only delay the answer that follows
            phrases.append((trim_silence(pcm, tts.sample_rate), tts.sample_rate))
        return phrases

    def _event(self, turn_id: int) -> asyncio.Event:
        return self._heard.setdefault(turn_id, asyncio.Event())

    def committed(self, turn_id: int, speech_end_ms: float) -> None:
        """The turn's endpoint is final: watch its deadline."""
        if self.acks and self.config.ack:
            self._due.put_nowait((turn_id, self.policy.ack_due_ms(speech_end_ms), False))
        if self.holds and self.config.hold_ms:
            self._due.put_nowait((turn_id, speech_end_ms + self.config.hold_ms, True))

    def marked(self, turn_id: int, mark: str) -> None:
        if mark == "transcript":
            self._event(turn_id).set()

    def closed(self, turn_id: int) -> None:
        """The turn finished or was dropped: stop waiting for it."""
        event = self._heard.pop(turn_id, None)
        if event is not None:
            event.set()

    async def run(self, output: AckPlayer) -> None:
        """Watch each committed turn's deadline, side by side."""
        async with asyncio.TaskGroup() as group:
            while True:
                turn_id, due, hold = await self._due.get()
                group.create_task(self._guarded(turn_id, due, hold, output), name=f"budget-{turn_id}")

    async def _guarded(self, turn_id: int, due: float, hold: bool, output: AckPlayer) -> None:
        """One turn's watch; an acknowledgement that cannot be played (the sink failed) is only
        logged: the turn's own audio meets the same sink and fails the turn there."""
        try:
            await (self._hold(turn_id, due, output) if hold else self._watch(turn_id, due, output))
        except asyncio.CancelledError:
            raise
        except Exception:
            _LOGGER.exception("turn %d: the acknowledgement could not be played", turn_id)

    async def _sleep_until(self, position_ms: float) -> None:
        delay = (position_ms - self.clock.position_ms()) / 1000
        if delay > 0:
            await asyncio.sleep(delay)

    async def _watch(self, turn_id: int, due: float, output: AckPlayer) -> None:
        """At the due time, acknowledge the turn if nothing was heard and the answer will be late."""
        await self._sleep_until(due)
        rec = self.tracker.record(turn_id) if self.tracker.is_open(turn_id) else None
        if rec is not None and "speech_end" in rec.marks:
            last_call = self.policy.last_call(rec.marks["speech_end"])
            wait_s = max(0.0, last_call - self.clock.position_ms()) / 1000
            # ASR heard words, or the turn closed; at the last call, a slow ASR gets an ack anyway
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event(turn_id).wait(), wait_s)
        self._heard.pop(turn_id, None)
        for attempt in range(2):
            if not self.tracker.is_open(turn_id):
                return
            rec = self.tracker.record(turn_id)
            if self.policy.should_ack(rec, self.clock.position_ms()):
                pcm, rate = self.acks[self._next % len(self.acks)]
                self._next += 1
                if await output.play_ack(turn_id, pcm, rate):
                    self.tracker.action(turn_id, "ack_played")
                return
            if attempt or "first_audio" in rec.marks or "speech_end" not in rec.marks:
                return
            await self._sleep_until(self.policy.last_call(rec.marks["speech_end"]))

    async def _hold(self, turn_id: int, due: float, output: AckPlayer) -> None:
        """At ``hold_ms`` after the end of speech, a holding phrase for an answer not yet playing:
        not for a turn without a transcript yet (ASR has its own deadline, the reprompt), nor
        for one whose first audio is expected within ``HOLD_SPARE_MS`` (it would wait for it)."""
        await self._sleep_until(due)
        if not self.tracker.is_open(turn_id):
            return
        rec = self.tracker.record(turn_id)
        now = self.clock.position_ms()
        if rec.outcome != "open" or Mark.FIRST_ANSWER_AUDIO in rec.marks or Mark.TRANSCRIPT not in rec.marks:
            return
        if rec.answer_eta_ms is not None and now <= rec.answer_eta_ms <= now + HOLD_SPARE_MS:
            return  # (an expectation already past is wrong: the voice is slower than it was)
        late = Action.FIRST_AUDIO_LATE if Mark.FIRST_SPEAKABLE_TOKEN in rec.marks else Action.FIRST_TOKEN_LATE
        pcm, rate = self.holds[self._next_hold % len(self.holds)]
        self._next_hold += 1
        if await output.play_ack(turn_id, pcm, rate, answered_only=True):
            self.tracker.action(turn_id, late)
