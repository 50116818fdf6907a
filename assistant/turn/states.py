"""The controller's state (idle, listening, thinking, speaking, waiting for a device) and mute, and
what it does when the tracker marks or finishes a turn. A part of ``TurnController``
(``turn/controller.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from assistant.events import Event, EventBus, State, StateChanged, TurnFinished
from assistant.turn.activation import Activation
from assistant.turn.budget import BudgetKeeper
from assistant.turn.kinds import Mark, Outcome, TurnKind
from assistant.turn.latency import LatencyTracker, TurnRecord
from assistant.turn.peers import Endpointer, TurnInfo
from assistant.turn.registry import Turns


class StateKeeper:
    """The controller's state, mute and the tracker's callbacks (mixed into ``TurnController``)."""

    turns: Turns
    tracker: LatencyTracker
    events: EventBus
    budget: BudgetKeeper
    activation: Activation
    endpointer: Endpointer | None
    on_turn: Callable[[TurnRecord], None] | None
    state: State
    muted: bool
    _listen_once: bool
    _stop_only: set[int]
    _info: dict[int, TurnInfo]
    _intended: dict[int, Event]

    def device_state(self, state: str) -> None:
        """An audio device reports ``waiting_for_device``, or that it works again."""
        if state == State.WAITING_FOR_DEVICE:
            self._set_state(State.WAITING_FOR_DEVICE)
        elif self.state == State.WAITING_FOR_DEVICE:
            self._set_state(State.IDLE if not self.tracker.open_turns() else State.THINKING)

    def set_muted(self, muted: bool) -> None:
        """While muted, the microphone is heard as silence; commands still work."""
        self.muted = muted
        if self.endpointer is not None:
            self.endpointer.muted = muted
        self.events.publish(StateChanged(self.state, muted))

    def listen(self) -> None:
        """Push-to-talk: open the microphone for one turn even when muted."""
        if self.muted:
            self._listen_once = True
            self.set_muted(False)

    def _marked(self, turn_id: int, mark: str) -> None:
        self.budget.marked(turn_id, mark)
        if turn_id in self._stop_only:
            return  # heard only for the stop word: the assistant is not listening to a question
        if mark == Mark.SPEECH_START:
            marks = self.tracker.record(turn_id).marks if self.tracker.is_open(turn_id) else {}
            if Mark.ENDPOINT not in marks:  # unpaced input: the endpoint may be marked first
                self._set_state(State.LISTENING)
        elif mark == Mark.ENDPOINT or (mark == Mark.TRANSCRIPT and not self.turns.is_held(turn_id)):
            self._set_state(State.THINKING)  # a speculation is not: the user may go on
        elif mark == Mark.FIRST_AUDIO:
            self._set_state(State.SPEAKING)
        elif mark == Mark.DONE:
            self.activation.replied(time.monotonic())

    def _finished(self, rec: TurnRecord) -> None:
        self.budget.closed(rec.turn_id)
        self._intended.pop(rec.turn_id, None)
        info = self._info.pop(rec.turn_id, TurnInfo(TurnKind.VOICE))
        self._stop_only.discard(rec.turn_id)
        if rec.outcome == Outcome.ANSWERED:
            for span in self.budget.policy.over_budget(rec):
                self.tracker.actions[f"over_budget.{span}"] += 1
        self.turns.forget(rec.turn_id)
        if self.on_turn is not None:
            self.on_turn(rec)
        self.events.publish(TurnFinished(rec.turn_id, info.request_id, rec.to_json(), info.kind))
        if not self.tracker.open_turns():
            self._set_state(State.IDLE)

    def _settle_state(self) -> None:
        """Idle again where no turn is in flight (a transcript refused, no speech, the wake
        gate closed with no question)."""
        if not self.tracker.open_turns() and self.state in (State.LISTENING, State.THINKING):
            self._set_state(State.IDLE)

    def _set_state(self, state: State) -> None:
        if state != self.state:
            self.state = state
            self.events.publish(StateChanged(state, self.muted))
