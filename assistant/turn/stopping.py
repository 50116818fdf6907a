"""What stops turns: ``cancel``, barge-in (speech over a reply), the speaker paused while speech is
suspected, "stop" and the stop word. A part of ``TurnController`` (``turn/controller.py``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from assistant.clock import StreamClock
from assistant.config import Config
from assistant.contracts import Speaker
from assistant.events import EventBus, StopWord
from assistant.turn.kinds import Action, Mark, Outcome
from assistant.turn.latency import LatencyTracker
from assistant.turn.peers import Alarms, Endpointer, WakeGate
from assistant.turn.registry import Turns

_LOGGER = logging.getLogger("assistant.turn.controller")  # one name for the controller's lines


class Stopping:
    """The controller's cancellations and interruptions (mixed into ``TurnController``)."""

    turns: Turns
    tracker: LatencyTracker
    events: EventBus
    clock: StreamClock
    config: Config
    barge_in: bool
    endpointer: Endpointer | None
    speaker: Speaker | None
    wake: WakeGate | None
    alarms: Alarms | None
    _stop_only: set[int]

    if TYPE_CHECKING:

        def _no_speech(self, turn_id: int) -> None: ...

        def _settle_state(self) -> None: ...

    def cancel(self, turn_id: int | None = None) -> list[int]:
        """Stop one turn, or every turn in flight; returns the turns cancelled."""
        targets = [turn_id] if turn_id is not None else self.tracker.open_turns()
        done = []
        for target in targets:
            if self.tracker.is_open(target):
                self.turns.cancel(target)
                self.tracker.finish(target, Outcome.CANCELLED)
                done.append(target)
        return done

    def _speech_began(self, turn_id: int, continues: int = 0) -> None:
        """Barge-in: the user speaks while a reply plays: stop it at once. Speech that continues
        an earlier turn (``continues``) cancels that turn wherever it is: its words were half of
        this one's."""
        self.tracker.record(turn_id).continues = continues
        if continues and self.tracker.is_open(continues):
            heard = Mark.FIRST_AUDIO in self.tracker.record(continues).marks
            self.tracker.action(continues, Action.CONTINUED)
            self.cancel(continues)
            if heard and self.speaker is not None:
                self.speaker.interrupt()
        if self.wake is not None and not self.wake.awake:
            self._stop_only.add(turn_id)  # the gate is open only for the stop word (an alarm plays)
        if not (self.config.listen.barge_in and self.barge_in):
            return
        speaking = [
            t for t in self.tracker.open_turns()
            if t != turn_id and Mark.FIRST_AUDIO in self.tracker.record(t).marks
        ]  # fmt: skip
        if speaking:
            for older in speaking:
                self.cancel(older)
            self.tracker.action(turn_id, Action.BARGE_IN)
            if self.speaker is not None:
                self.speaker.interrupt()

    def _voice_suspected(self, suspect: bool) -> None:
        """The user may be starting to talk over the reply: pause the speaker until it is sure."""
        if not (self.config.listen.barge_in and self.barge_in) or self.speaker is None:
            return
        if suspect:
            self.speaker.pause()
        else:
            self.speaker.resume()

    def _stop_others(self, turn_id: int) -> None:
        """ "Stop": every older reply in flight is cancelled, and the speaker falls silent."""
        for older in self.tracker.open_turns():
            if older < turn_id:
                self.cancel(older)
        if self.speaker is not None:
            self.speaker.interrupt()

    def _stop_word(self, turn_id: int, text: str) -> None:
        """The stop word over playback: every other turn in flight is cancelled, the speaker falls
        silent, ringing alarms stop; this turn ends unanswered (it is no turn of its own)."""
        self.turns.cancel(turn_id)
        self.tracker.discard(turn_id)
        self._no_speech(turn_id)
        stopped = self.cancel()
        if self.endpointer is not None:
            self.endpointer.end_now(turn_id)  # a paused utterance ends here: the next speech is new
            self.endpointer.forget_last(turn_id)
        alarms = self.alarms.silence() if self.alarms is not None else 0
        if self.speaker is not None:
            self.speaker.interrupt()
        self.tracker.actions[Action.STOP_WORD] += 1
        _LOGGER.info("stop word %r: %d turn(s) stopped, %d alarm(s) silenced", text, len(stopped), alarms)
        self.events.publish(StopWord(text, self.clock.position_ms(), stopped, alarms))
        self._settle_state()
