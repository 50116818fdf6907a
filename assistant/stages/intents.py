"""Intents stage: ``Transcript`` in; a command's answer (``Token``/``ReplyDone``) out, or the
transcript unchanged for the LLM.

Between ASR and the LLM. Each transcript, a speculative one too (so a command's answer is ready
at the endpoint), is matched against the command sentences (``intents.matcher``, in a worker
thread). A match is answered here, without the LLM: its words go downstream as the reply (the LLM
stage passes them on), and what it *does* (a timer, a device, the volume, "stop") happens only
once the turn is committed (``Turns.wait_released``): a voided speculation does nothing. Anything
else goes on to the LLM as it came; where the pipeline has no LLM, it gets the intents package's
"Sorry, I couldn't understand that".

A command that switches a device with a ``state_topic`` is answered from the device itself: its
reply waits, after the commit, for the device's next live report (``DeviceState`` on the event bus,
heard by the MQTT bridge) for up to ``DEVICE_WAIT_S`` ("The desk lamp did not answer.", "... is
still off.", else the package's confirmation).

Only this stage acts, and only on what the user said: the LLM's words come after it and are never
matched. The turn controller hears ``Intended``/``NotIntended`` (the record's ``intent`` and
``handled_by``, the ``IntentRecognized``/``IntentNotRecognized`` events once committed),
``Commanded`` (a ``DeviceCommand``) and ``StopAsked`` ("stop": replies in flight cancelled).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from assistant.config import DeadlineConfig, DeviceConfig
from assistant.events import DeviceState, Event, EventBus
from assistant.intents.handlers import Answer, Handlers, StopReplies, Switch, confirmation, reported_on
from assistant.intents.matcher import Matcher
from assistant.messages import Message, ReplyDone, Token, Transcript
from assistant.stages.base import Queue, call_in_thread, fail, run_inbox
from assistant.turn.kinds import Mark
from assistant.turn.reports import (
    Commanded,
    Generated,
    Intended,
    Marked,
    NotIntended,
    Replied,
    StopAsked,
    TurnChannel,
)

_LOGGER = logging.getLogger(__name__)

MATCH_DEADLINE_S = 10.0
"""One match (the first one reads and parses the sentences), seconds."""
DEVICE_WAIT_S = 1.5
"""How long a command waits for a switched device to report its state, seconds."""


class IntentStage:
    """Answers commands; passes everything else on."""

    name = "intents"

    def __init__(
        self,
        matcher: Matcher,
        handlers: Handlers,
        channel: TurnChannel,
        deadlines: DeadlineConfig | None = None,
        *,
        llm: bool = True,
        events: EventBus | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        """``llm``: an LLM stage follows (else unmatched words get an apology); ``events``: where
        devices' state reports are heard (None: devices are not waited for); ``now``: the wall
        clock, seconds since the epoch (the time of day, timers)."""
        self.matcher = matcher
        self.handlers = handlers
        self.channel = channel
        self.deadlines = deadlines or DeadlineConfig()
        self.llm = llm
        self.events = events
        self.device_wait_s = DEVICE_WAIT_S
        self.now = now
        self.matched = 0
        self.passed = 0
        self._waiting: set[asyncio.Task[None]] = set()
        """Effects of speculated commands, waiting for their turn's commit (one task per turn)."""
        self._warming: asyncio.Future[None] | None = None

    def reconfigure(self, matcher: Matcher, handlers: Handlers) -> None:
        """A reloaded config's devices and sentences, from the next transcript on."""
        self.matcher, self.handlers = matcher, handlers

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        # the first match parses the sentences: start it now, in a thread, so the first command
        # does not wait for it (a match before it is done waits on the matcher's lock)
        self._warming = asyncio.get_running_loop().run_in_executor(None, self.matcher.warm)

        async def handle(item: Message) -> None:
            if isinstance(item, Transcript):
                await self._transcript(item, outbox)
            else:
                await outbox.put(item)

        async def end() -> None:
            for task in list(self._waiting):
                task.cancel()
            await asyncio.gather(*self._waiting, return_exceptions=True)
            if self._warming is not None:
                await asyncio.gather(self._warming, return_exceptions=True)

        await run_inbox(inbox, outbox, self.channel, handle, end, stage=self.name)

    async def _transcript(self, item: Transcript, outbox: Queue) -> None:
        turn_id, report, turns = item.turn_id, self.channel.report, self.channel.turns
        matcher = self.matcher
        match = await call_in_thread(
            lambda: matcher.match(item.text), stage=self.name, deadline_s=MATCH_DEADLINE_S
        )
        if turns.is_cancelled(turn_id):
            return
        if match is None:
            self.passed += 1
            report(NotIntended(turn_id, item.text))
            if self.llm:
                await outbox.put(item)
                return
            answer = Answer(self.handlers.not_understood())
        else:
            self.matched += 1
            _LOGGER.info("turn %d: command %s %s", turn_id, match.intent, match.slots)
            answer = self.handlers.answer(match, self.now())
            report(Intended(turn_id, match.intent, match.slots, match.text))
        if self._reporting(answer):
            self._spawn(turn_id, self._confirmed(turn_id, answer, outbox))
            return
        await self._reply(turn_id, answer.text, outbox)
        if answer.effects:
            if turns.is_held(turn_id):
                self._spawn(turn_id, self._when_committed(turn_id, answer))
            else:
                self._act(turn_id, answer)

    def _spawn(self, turn_id: int, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"intent-{turn_id}")
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    def _reporting(self, answer: Answer) -> list[DeviceConfig]:
        """The devices this answer switches that will say how it went (a command and a state topic)."""
        if self.events is None:
            return []
        return [
            e.device
            for e in answer.effects
            if isinstance(e, Switch) and e.device.command_topic and e.device.state_topic
        ]

    async def _reply(self, turn_id: int, text: str, outbox: Queue) -> None:
        """The answer, as the LLM would have given it: marks, the text, the end of the reply."""
        report, now = self.channel.report, self.channel.clock.position_ms()
        if text:
            report(Marked(turn_id, Mark.FIRST_TOKEN, now))
            report(Marked(turn_id, Mark.FIRST_SPEAKABLE_TOKEN, now))
            report(Generated(turn_id, text))
            await outbox.put(Token(turn_id, text))
        report(Replied(turn_id, text))
        await outbox.put(ReplyDone(turn_id, text, "stop"))

    async def _confirmed(self, turn_id: int, answer: Answer, outbox: Queue) -> None:
        """Once committed: switch, wait for the devices' reports, then answer from them."""
        if not await self.channel.turns.wait_released(turn_id):
            return
        assert self.events is not None
        devices = self._reporting(answer)
        watch = self.events.subscribe()
        try:
            self._act(turn_id, answer)
            reports = await self._reports(watch, devices)
            if not self.channel.turns.is_cancelled(turn_id):
                await self._reply(turn_id, confirmation(answer, reports), outbox)
        except Exception as err:  # this task's own error boundary: the turn fails, not the stage
            fail(self.channel, self.name, turn_id, err)
        finally:
            self.events.unsubscribe(watch)

    async def _reports(
        self, watch: asyncio.Queue[Event], devices: list[DeviceConfig]
    ) -> dict[str, bool | None]:
        """Each device's first live state report, until all have reported or the wait is over."""
        waiting = {d.name: d for d in devices}
        reports: dict[str, bool | None] = {}
        try:
            async with asyncio.timeout(self.device_wait_s):
                while len(reports) < len(waiting):
                    event = await watch.get()
                    if isinstance(event, DeviceState) and not event.retained and event.device in waiting:
                        reports.setdefault(event.device, reported_on(waiting[event.device], event.payload))
        except TimeoutError:
            _LOGGER.info("intents: no state from %s", sorted(set(waiting) - set(reports)))
        return reports

    async def _when_committed(self, turn_id: int, answer: Answer) -> None:
        if not await self.channel.turns.wait_released(turn_id):
            _LOGGER.info("turn %d: the speculation was void; the command does nothing", turn_id)
            return
        try:
            self._act(turn_id, answer)
        except Exception as err:  # this task's own error boundary: the turn fails, not the stage
            fail(self.channel, self.name, turn_id, err)

    def _act(self, turn_id: int, answer: Answer) -> None:
        """The committed command's effects: here (timers, volume) or by the controller."""
        if self.channel.turns.is_cancelled(turn_id):
            return
        now = self.now()
        for effect in answer.effects:
            if isinstance(effect, Switch):
                device = effect.device
                if device.command_topic:
                    payload = device.payload_on if effect.on else device.payload_off
                    self.channel.report(Commanded(turn_id, device.name, device.command_topic, payload))
            elif isinstance(effect, StopReplies):
                self.channel.report(StopAsked(turn_id))
            else:
                self.handlers.apply(effect, now)
