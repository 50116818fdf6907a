"""Events the pipeline publishes for observers (the MQTT bridge, logs, tests).

The voice path never waits on an observer: each subscriber has a bounded queue, and when it is
full the oldest event is dropped and counted (``EventBus.dropped``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class State(StrEnum):
    """What the assistant is doing, as published on ``state``."""

    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    WAITING_FOR_DEVICE = "waiting_for_device"


STATES = tuple(State)
"""What the assistant is doing, as published on ``state``."""


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every published event."""


@dataclass(frozen=True, slots=True)
class StateChanged(Event):
    state: str
    """One of ``STATES``."""
    muted: bool = False


@dataclass(frozen=True, slots=True)
class WakeDetected(Event):
    """The wake word model heard its word (``listen.wake_engine = "micro"``); what follows is a turn."""

    wake_word: str
    """The word as the model names it (``Okay Nabu``)."""
    model: str
    """The model (``okay_nabu``, or a file's stem)."""
    at_ms: float
    """Where in the input it was heard (input timeline, ms)."""
    probability: float
    """The model's smoothed probability (0-1)."""


@dataclass(frozen=True, slots=True)
class StopWord(Event):
    """The stop word was heard while the speaker played: the reply or alarm stopped."""

    text: str
    """What was heard ("Stop.")."""
    at_ms: float
    """When (input timeline, ms)."""
    stopped: list[int]
    """The turns it cancelled (their ``TurnFinished`` says ``cancelled``); none where barge-in
    already had, at the word's first syllable."""
    alarms: int
    """Ringing alarms silenced."""


@dataclass(frozen=True, slots=True)
class TurnEvent(Event):
    turn_id: int
    request_id: str | None
    """The ``id`` of the command that started the turn, echoed back; None for spoken turns."""


@dataclass(frozen=True, slots=True)
class TranscriptReady(TurnEvent):
    text: str
    source: str
    """``voice`` (heard) or ``text`` (an ``ask`` command)."""


@dataclass(frozen=True, slots=True)
class ReplyChunk(TurnEvent):
    text: str
    """A speakable piece of the reply, in order."""
    index: int


@dataclass(frozen=True, slots=True)
class ReplyFinished(TurnEvent):
    text: str
    """The whole reply text (answer only, never reasoning)."""
    finish_reason: str


@dataclass(frozen=True, slots=True)
class ReasoningText(TurnEvent):
    text: str
    """Reasoning text of a reasoning model (published only where enabled)."""


@dataclass(frozen=True, slots=True)
class TurnFinished(TurnEvent):
    record: dict[str, Any]
    """The turn's latency record, as in the ``--report`` line."""
    kind: str
    """``voice``, ``ask`` or ``say``."""


@dataclass(frozen=True, slots=True)
class IntentRecognized(TurnEvent):
    """A transcript matched a local intent; it is handled without the LLM."""

    intent: str
    """The intent's name, as in Home Assistant's intents (``HassTurnOn``, ``HassStartTimer``...)."""
    slots: dict[str, Any]
    """Slot name -> value (``{"area": "kitchen", "domain": "light"}``), JSON-able."""
    text: str
    """The words matched."""
    handled_by: str = "intent"
    """``intent``: a local handler answers (the LLM never sees it)."""


@dataclass(frozen=True, slots=True)
class IntentNotRecognized(TurnEvent):
    """A transcript matched no local intent; the LLM answers it."""

    text: str


@dataclass(frozen=True, slots=True)
class DeviceCommand(TurnEvent):
    """A matched intent switches a declared device: publish ``payload`` on its command topic."""

    device: str
    """The device's name, as declared in the pipeline's ``[[devices]]``."""
    topic: str
    payload: str


@dataclass(frozen=True, slots=True)
class DeviceState(Event):
    """A declared device reported its state on its ``state_topic`` (the MQTT bridge hears it).

    Belongs to no turn: a device speaks when it likes. A handler that sent a ``DeviceCommand``
    may take the next live (not ``retained``) report of that device as its answer; the bridge
    never waits for one, so a device that does not answer blocks nothing.
    """

    device: str
    """The device's name, as declared in the pipeline's ``[[devices]]``."""
    payload: str
    """What the device published, as UTF-8 text with surrounding white space removed (``ON``,
    ``{"state": "ON", "brightness": 254}``...): interpreting it is the handler's business."""
    retained: bool = False
    """The broker's stored copy, replayed when the bridge subscribed: the device's state as last
    known, not an answer to anything just sent. Reported once per value."""


@dataclass(frozen=True, slots=True)
class ErrorEvent(TurnEvent):
    code: str
    message: str


class EventBus:
    """Fan-out of events to subscribers, never blocking the publisher."""

    def __init__(self) -> None:
        self._queues: list[asyncio.Queue[Event]] = []
        self.dropped = 0
        """Events dropped because a subscriber's queue was full."""

    def subscribe(self, maxsize: int = 1000) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self._queues.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        if queue in self._queues:
            self._queues.remove(queue)

    def publish(self, event: Event) -> None:
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(event)
