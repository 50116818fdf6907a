"""A turn that fails or goes unheard, and what the controller speaks outside a turn's reply: the
acknowledgements, holding phrases and reprompt synthesized before listening, the apology, the
reprompt, and ``announce`` (a timer's alarm). A part of ``TurnController`` (``turn/controller.py``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from assistant.clock import StreamClock
from assistant.config import Config
from assistant.contracts import Synthesizer
from assistant.errors import AssistantError, StageTimeoutError
from assistant.events import ErrorEvent, EventBus
from assistant.turn.budget import BudgetKeeper, synthesize_all
from assistant.turn.kinds import Action, Mark, Outcome, TurnKind
from assistant.turn.latency import LatencyTracker
from assistant.turn.peers import NoticePlayer
from assistant.turn.registry import Turns

_LOGGER = logging.getLogger("assistant.turn.controller")  # one name for the controller's lines


class Notices:
    """The controller's failures, reprompts and spoken notices (mixed into ``TurnController``)."""

    config: Config
    clock: StreamClock
    tracker: LatencyTracker
    budget: BudgetKeeper
    output: NoticePlayer | None
    tts: Synthesizer | None
    _announced: dict[str, tuple[bytes, int]]
    _notices: set[asyncio.Task[object]]
    turns: Turns
    events: EventBus
    errors: list[tuple[int, AssistantError]]
    _failed_held: dict[int, tuple[AssistantError, str]]
    _stop_only: set[int]

    if TYPE_CHECKING:

        def _request_id(self, turn_id: int) -> str | None: ...

        def _begin(self, turn_id: int, kind: TurnKind, request_id: str | None = None) -> None: ...

    async def prepare(self) -> None:
        """Before listening: synthesize the acknowledgements, the holding phrases and the reprompt."""
        if self.tts is None or self.output is None or not self.clock.realtime:
            return
        await self.budget.prepare(self.tts)
        reprompt = self.config.output.reprompt.strip()
        if reprompt and self.config.latency.transcript_ms:
            work = asyncio.to_thread(synthesize_all, self.tts, reprompt)
            pcm = await asyncio.wait_for(work, self.config.deadlines.tts_s)
            self._announced[reprompt] = (pcm, self.tts.sample_rate)

    def _failed(self, turn_id: int, err: AssistantError, stage: str) -> None:
        """A stage failed on the turn. A turn already over (cancelled: its command had its answer)
        is only logged; a speculation's failure waits for its endpoint (the user may go on, and
        then it never was); any other ends as that error."""
        if self.turns.is_cancelled(turn_id) or not self.tracker.is_open(turn_id):
            self.turns.cancel(turn_id)
            _LOGGER.info("turn %d: %s after the turn ended: %s", turn_id, err.code, err.message)
            return
        if self.turns.is_held(turn_id):
            self.turns.cancel(turn_id)  # its work stops now
            self._failed_held[turn_id] = (err, stage)
            return
        self._fail_now(turn_id, err, stage)

    def _fail_now(self, turn_id: int, err: AssistantError, stage: str) -> None:
        """The turn ends as ``err``: an error event, the record's outcome, an apology if spoken."""
        self.errors.append((turn_id, err))
        del self.errors[:-100]
        if isinstance(err, StageTimeoutError):
            self.tracker.action(turn_id, Action.STAGE_TIMEOUT)
        spoken = self.tracker.is_open(turn_id) and not self.turns.is_silent(turn_id) and stage != "output"
        spoken &= turn_id not in self._stop_only  # heard for the stop word only: nobody asked
        self.events.publish(ErrorEvent(turn_id, self._request_id(turn_id), err.code, err.message))
        self.turns.cancel(turn_id)
        self.tracker.finish(turn_id, Outcome.ERROR, err.code)
        if spoken:
            self._apologise(turn_id)

    def _reprompt(self, turn_id: int) -> None:
        """No usable words in time: the turn ends ``reprompted`` and the user hears
        ``output.reprompt`` (synthesized at start-up) instead of silence."""
        self._begin(turn_id, TurnKind.VOICE)  # a turn of the user's all the same: older replies stop
        self.tracker.action(turn_id, Action.REPROMPT)
        text = self.config.output.reprompt.strip()
        if text and self.output is not None and self.tts is not None:
            self.tracker.record(turn_id).mark(Mark.FIRST_AUDIO, self.clock.position_ms())
            self._notice(self._say(turn_id, text), f"reprompt-{turn_id}")
        self.turns.cancel(turn_id)
        self.tracker.finish(turn_id, Outcome.REPROMPTED)

    async def announce(self, text: str) -> bool:
        """Speak ``text``, which belongs to no turn (a timer's alarm), through the output, after
        what it is playing; False where there is no output or voice. A failure raises."""
        tts, output = self.tts, self.output
        if tts is None or output is None:
            return False
        spoken = self._announced.get(text)
        if spoken is None:
            work = asyncio.to_thread(synthesize_all, tts, text)
            spoken = (await asyncio.wait_for(work, self.config.deadlines.tts_s), tts.sample_rate)
            self._announced = {**dict(list(self._announced.items())[-7:]), text: spoken}
        await output.play_notice(*spoken)
        return True

    def _apologise(self, turn_id: int) -> None:
        if self.output is None or self.tts is None or not self.config.output.apology.strip():
            return
        self._notice(self._say_sorry(turn_id), f"apology-{turn_id}")

    def _notice(self, work: Coroutine[Any, Any, object], name: str) -> None:
        """Play a notice in a task of its own, which ``settle`` waits for."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def settle(self) -> None:
        """Wait for apologies still being played (the output closes its sink after this)."""
        if self._notices:
            await asyncio.wait(list(self._notices), timeout=self.config.deadlines.output_s)

    async def _say_sorry(self, turn_id: int) -> None:
        """Speak the apology (``announce`` keeps it once synthesized); a failure is only logged."""
        if await self._say(turn_id, self.config.output.apology.strip()):
            self.tracker.actions[Action.APOLOGY_PLAYED] += 1

    async def _say(self, turn_id: int, text: str) -> bool:
        """``announce(text)`` for a turn that has ended; a failure is only logged."""
        try:
            return await self.announce(text)
        except Exception as err:  # the TTS itself may be what failed
            _LOGGER.warning("turn %d: %r could not be spoken: %r", turn_id, text, err)
            return False
