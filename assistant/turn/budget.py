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
from assistant.turn.latency import BudgetPolicy, LatencyTracker, SynthesisRate

_LOGGER = logging.getLogger(__name__)


class AckPlayer(Protocol):
    """Plays an acknowledgement for a turn (the output stage)."""

    async def play_ack(self, turn_id: int, pcm: bytes, rate: int) -> bool:
        """Play it unless the turn has been heard already; False if too late."""
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
        self.rate = SynthesisRate()
        """Synthesis time per character: calibrated by the acknowledgements, then by the TTS stage."""
        self._next = 0
        self._due: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
        self._heard: dict[int, asyncio.Event] = {}

    def reconfigure(self, config: LatencyConfig) -> None:
        """New budgets and switches; the acknowledgements already synthesized stay."""
        self.config = config
        self.policy = policy_for(config)

    async def prepare(self, tts: Synthesizer) -> None:
        """Synthesize the acknowledgements once, before listening. A voice that cannot (a remote
        server that is down) leaves the daemon without acknowledgements, with a warning."""
        for text in self.config.acks:
            if text.strip() and len(self.acks) < len(self.config.acks):
                start = time.perf_counter()
                try:
                    pcm = await asyncio.to_thread(synthesize_all, tts, text)
                except AssistantError as err:
                    _LOGGER.warning(
                        "acknowledgements skipped: the voice failed: [%s] %s", err.code, err.message
                    )
                    self.acks.clear()
                    return
                self.rate.observe(len(text), (time.perf_counter() - start) * 1000)
                # the voice's trailing silence would only delay the answer that follows
                self.acks.append((trim_silence(pcm, tts.sample_rate), tts.sample_rate))

    def _event(self, turn_id: int) -> asyncio.Event:
        return self._heard.setdefault(turn_id, asyncio.Event())

    def committed(self, turn_id: int, speech_end_ms: float) -> None:
        """The turn's endpoint is final: watch its deadline."""
        if self.acks:
            self._due.put_nowait((turn_id, self.policy.ack_due_ms(speech_end_ms)))

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
                turn_id, due = await self._due.get()
                group.create_task(self._guarded(turn_id, due, output), name=f"budget-{turn_id}")

    async def _guarded(self, turn_id: int, due: float, output: AckPlayer) -> None:
        """One turn's watch; an acknowledgement that cannot be played (the sink failed) is only
        logged: the turn's own audio meets the same sink and fails the turn there."""
        try:
            await self._watch(turn_id, due, output)
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
