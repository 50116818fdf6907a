"""Hermes protocol compatibility (Rhasspy/Snips clients), on when ``mqtt.hermes`` is true.

In (only for our ``siteId``, or none given):
- ``hermes/tts/say`` ``{"text", "id"?, "siteId"?, "sessionId"?, "lang"?}`` -> speak the text;
- ``hermes/dialogueManager/startSession`` ``{"siteId"?, "init": {"type": "action"|"notification",
  "text"?}, "customData"?}`` -> ``sessionStarted``; the text is spoken; an ``action`` session then
  opens the microphone for one turn; a ``notification`` session ends when its text was spoken;
- ``hermes/dialogueManager/endSession`` ``{"sessionId", "text"?}`` -> speak the text, then
  ``sessionEnded``.

Out: ``hermes/tts/sayFinished`` ``{"id", "siteId", "sessionId"}`` when a spoken text is done;
``hermes/asr/textCaptured`` ``{"text", "likelihood", "seconds", "siteId", "sessionId"}`` on each
transcript heard; ``hermes/dialogueManager/sessionStarted`` / ``sessionEnded``;
``hermes/intent/<intentName>`` ``{"input", "intent": {"intentName", "confidenceScore"}, "slots",
"siteId", "sessionId", "id", "customData"}`` when a transcript matched a local intent (each slot
``{"entity", "slotName", "rawValue", "value": {"kind", "value"}, "confidence"}``), and
``hermes/nlu/intentNotRecognized`` ``{"input", "siteId", "sessionId", "id", "customData"}`` when it
did not; ``hermes/hotword/<model>/detected`` ``{"modelId", "modelVersion", "modelType",
"currentSensitivity", "siteId", "sessionId"}`` when the wake word model heard its word. These
tell; they ask nothing: the intent has been handled here, and a reply on ``endSession`` is simply
spoken. ``sessionId`` is the open ``action`` session, else ``turn-<id>``.
Every command goes through the same checks, rate limit and queue as the bridge's own.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from assistant.config import MqttConfig
from assistant.events import (
    Event,
    IntentNotRecognized,
    IntentRecognized,
    TranscriptReady,
    TurnFinished,
    WakeDetected,
)
from assistant.mqtt.protocol import Command, CommandError, Outgoing, decode_json, publishable

TTS_SAY = "hermes/tts/say"
TTS_SAY_FINISHED = "hermes/tts/sayFinished"
ASR_TEXT_CAPTURED = "hermes/asr/textCaptured"
START_SESSION = "hermes/dialogueManager/startSession"
END_SESSION = "hermes/dialogueManager/endSession"
SESSION_STARTED = "hermes/dialogueManager/sessionStarted"
SESSION_ENDED = "hermes/dialogueManager/sessionEnded"
INTENT = "hermes/intent/"
INTENT_NOT_RECOGNIZED = "hermes/nlu/intentNotRecognized"
HOTWORD = "hermes/hotword/{}/detected"
PENDING = 256


def hermes_slots(slots: dict[str, Any]) -> list[dict[str, Any]]:
    """Our ``{name: value}`` slots as Hermes slot objects (numbers are ``Number``, the rest
    ``Custom``)."""
    out = []
    for name, value in slots.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        raw = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        out.append(
            {
                "entity": name,
                "slotName": name,
                "rawValue": raw,
                "value": {"kind": "Number" if number else "Custom", "value": value},
                "confidence": 1.0,
            }
        )
    return out


@dataclass(frozen=True, slots=True)
class _Pending:
    """A text we were asked to speak, and what to publish once it has been spoken."""

    hermes_id: str | None
    session_id: str | None
    end_session: bool


class Hermes:
    """Translates Hermes messages into bridge commands, and pipeline events into Hermes messages."""

    def __init__(self, config: MqttConfig) -> None:
        self.config = config
        self.site = config.site
        self._ids = itertools.count(1)
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._session: str | None = None
        """The ``action`` session waiting for the user's words."""

    def topics(self) -> tuple[str, ...]:
        return (TTS_SAY, START_SESSION, END_SESSION)

    def _out(self, topic: str, body: dict[str, Any]) -> Outgoing:
        return Outgoing(topic, json.dumps(body, ensure_ascii=False), qos=1)

    def _say(self, text: object, pending: _Pending) -> Command:
        if not isinstance(text, str):
            raise CommandError("bad_payload", "hermes: text must be a string")
        if len(text) > self.config.max_text_chars:
            raise CommandError("too_long", f"hermes: text longer than {self.config.max_text_chars}")
        rid = f"hermes-{next(self._ids)}"
        self._pending[rid] = pending
        while len(self._pending) > PENDING:
            self._pending.popitem(last=False)
        return Command("say", rid, text)

    def _ended(self, session_id: str | None) -> Outgoing:
        if self._session == session_id:
            self._session = None
        body = {"sessionId": session_id, "siteId": self.site, "termination": {"reason": "nominal"}}
        return self._out(SESSION_ENDED, body)

    def parse(self, topic: str, payload: bytes) -> tuple[list[Command], list[Outgoing]]:
        """One Hermes message -> (commands to admit, messages to publish now)."""
        data = decode_json(payload, self.config)
        site = data.get("siteId", self.site)
        if site != self.site:
            return [], []
        session = data.get("sessionId")
        if session is not None and not isinstance(session, str):
            raise CommandError("bad_payload", "hermes: sessionId must be a string")
        if topic == TTS_SAY:
            hid = data.get("id")
            if "text" not in data or (hid is not None and not isinstance(hid, str)):
                raise CommandError("bad_payload", "hermes/tts/say needs text (and id, if any, a string)")
            return [self._say(data["text"], _Pending(hid, session, False))], []
        if topic == START_SESSION:
            init = data.get("init", {"type": "notification"})
            if not isinstance(init, dict) or init.get("type") not in ("action", "notification"):
                raise CommandError("bad_payload", "hermes: init.type must be action or notification")
            session = uuid.uuid4().hex
            started = self._out(
                SESSION_STARTED,
                {"sessionId": session, "siteId": self.site, "customData": data.get("customData")},
            )
            action = init["type"] == "action"
            commands = []
            if init.get("text"):
                commands.append(self._say(init["text"], _Pending(None, session, not action)))
            if action:
                self._session = session
                commands.append(Command("listen"))
                return commands, [started]
            return commands, [started] if commands else [started, self._ended(session)]
        if topic == END_SESSION:
            if data.get("text"):
                return [self._say(data["text"], _Pending(None, session, True))], []
            return [], [self._ended(session)]
        return [], []

    def on_event(self, event: Event) -> list[Outgoing]:
        """Hermes messages for one pipeline event."""
        if isinstance(event, WakeDetected):
            topic = HOTWORD.format(event.model)
            if "/" in event.model or not publishable(topic):
                return []
            body = {
                "modelId": event.model,
                "modelVersion": "",
                "modelType": "universal",
                "currentSensitivity": round(event.probability, 3),
                "siteId": self.site,
                "sessionId": None,
            }
            return [self._out(topic, body)]
        if isinstance(event, TranscriptReady) and event.source == "voice":
            body = {
                "text": event.text,
                "likelihood": 1.0,
                "seconds": 0.0,
                "siteId": self.site,
                "sessionId": self._session,
            }
            return [self._out(ASR_TEXT_CAPTURED, body)]
        if isinstance(event, IntentRecognized):
            topic = INTENT + event.intent
            if "/" in event.intent or not publishable(topic):
                return []
            body = {
                "input": event.text,
                "intent": {"intentName": event.intent, "confidenceScore": 1.0},
                "slots": hermes_slots(event.slots),
                "siteId": self.site,
                "sessionId": self._session or f"turn-{event.turn_id}",
                "id": event.request_id,
                "customData": None,
            }
            return [self._out(topic, body)]
        if isinstance(event, IntentNotRecognized):
            body = {
                "input": event.text,
                "siteId": self.site,
                "sessionId": self._session or f"turn-{event.turn_id}",
                "id": event.request_id,
                "customData": None,
            }
            return [self._out(INTENT_NOT_RECOGNIZED, body)]
        if isinstance(event, TurnFinished) and event.request_id is not None:
            pending = self._pending.pop(event.request_id, None)
            if pending is None:
                return []
            body = {"id": pending.hermes_id, "siteId": self.site, "sessionId": pending.session_id}
            out = [self._out(TTS_SAY_FINISHED, body)]
            if pending.end_session:
                out.append(self._ended(pending.session_id))
            return out
        return []
