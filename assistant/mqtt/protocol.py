"""The MQTT bridge's wire protocol: topic names, commands in (parsed and checked against their
schema, rate-limited, deduplicated by id), pipeline events out (translated to messages), and what
declared devices publish on their state topics. Pure: no connection here (``mqtt.MqttBridge`` has
that); README "MQTT" has the schema.
"""

from __future__ import annotations

import json
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from assistant import events as ev
from assistant.config import MqttConfig
from assistant.errors import AssistantError, ConfigError
from assistant.events import Event

COMMANDS = ("ask", "say", "listen", "cancel", "mute", "unmute")
_FIELDS: dict[str, dict[str, type]] = {
    "ask": {"text": str, "speak": bool},
    "say": {"text": str},
    "listen": {},
    "cancel": {"turn": int},
    "mute": {"muted": bool},
    "unmute": {},
}
"""Keys each command accepts besides ``id`` (and ``command`` on the ``command`` topic)."""
RECENT_IDS = 1024
MAX_TOPIC_BYTES = 65_535


@dataclass(frozen=True, slots=True)
class Command:
    """One checked command, ready to run."""

    name: str
    id: str | None = None
    text: str = ""
    speak: bool = True
    turn: int | None = None
    muted: bool = True


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish."""

    topic: str
    payload: str
    qos: int = 0
    retain: bool = False


class CommandError(AssistantError):
    """A command refused: ``bad_payload``, ``bad_command``, ``too_long``, ``busy``, ``duplicate``,
    ``retained`` (or the code of the pipeline error that stopped it)."""

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message, code=code)
        self.request_id = request_id


class Topics:
    """The bridge's topic names, from the config."""

    def __init__(self, config: MqttConfig) -> None:
        self.base = f"{config.prefix}/{config.site}"
        self.availability = f"{self.base}/availability"
        self.command = f"{self.base}/command"
        self.commands = {f"{self.base}/{name}": name for name in COMMANDS}
        self.ha_status = f"{config.discovery_prefix}/status"
        self.intent = f"{self.base}/intent"

    def out(self, name: str) -> str:
        return f"{self.base}/{name}"


def config_from_url(url: str, base: MqttConfig) -> MqttConfig:
    """``mqtt://[user:pass@]host[:port]`` or ``mqtts://...``: MQTT on, broker settings replaced."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"--mqtt {url!r}: expected mqtt://[user:pass@]host[:port] or mqtts://...")
    try:
        port = parts.port
    except ValueError as err:
        raise ConfigError(f"--mqtt {url!r}: bad port") from err
    tls = parts.scheme == "mqtts"
    return replace(
        base,
        enabled=True,
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
    )


def tls_context(config: MqttConfig) -> ssl.SSLContext:
    """The TLS settings of ``config`` (the CA file is read here, once)."""
    try:
        context = ssl.create_default_context(cafile=config.tls_ca_file or None)
    except OSError as err:
        raise ConfigError(f"mqtt.tls_ca_file = {config.tls_ca_file!r}: {err}") from err
    if config.tls_insecure:
        context.check_hostname = False
    return context


def _check_text(text: str, config: MqttConfig, rid: str | None) -> str:
    if not text.strip():
        raise CommandError("bad_payload", "text is empty", rid)
    if len(text) > config.max_text_chars:
        raise CommandError(
            "too_long", f"text of {len(text)} characters: at most {config.max_text_chars}", rid
        )
    return text


def decode_json(payload: bytes, config: MqttConfig) -> dict[str, Any]:
    """A payload as a JSON object ({} when empty); ``CommandError`` when it is not one."""
    if len(payload) > config.max_payload_bytes:
        raise CommandError("too_long", f"payload of {len(payload)} bytes: at most {config.max_payload_bytes}")
    if not payload.strip():
        return {}
    try:
        data = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise CommandError("bad_payload", f"payload is not UTF-8: {err.reason}") from err
    except (ValueError, RecursionError) as err:
        raise CommandError("bad_payload", f"payload is not JSON: {err}") from err
    if not isinstance(data, dict):
        raise CommandError("bad_payload", f"payload must be a JSON object, got {type(data).__name__}")
    return data


def parse_command(name: str | None, payload: bytes, config: MqttConfig) -> Command:
    """Check one command payload against its schema. ``name`` None: the ``command`` topic."""
    data = decode_json(payload, config)
    rid = data.get("id")
    if rid is not None and (not isinstance(rid, str) or not 0 < len(rid) <= 128):
        raise CommandError("bad_payload", "id must be a string of 1 to 128 characters")
    allowed: dict[str, type] = {"id": str}
    if name is None:
        name = data.get("command")
        if name not in _FIELDS:
            raise CommandError(
                "bad_command", f"unknown command {name!r}: choose one of {list(COMMANDS)}", rid
            )
        allowed["command"] = str
    assert isinstance(name, str)
    allowed.update(_FIELDS[name])
    for key, value in data.items():
        if key not in allowed:
            raise CommandError("bad_payload", f"{name}: unknown key {key!r}: allowed {sorted(allowed)}", rid)
        kind = allowed[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CommandError("bad_payload", f"{name}: {key} must be a {kind.__name__}", rid)
    if name in ("ask", "say"):
        if "text" not in data:
            raise CommandError("bad_payload", f"{name}: text is required", rid)
        _check_text(data["text"], config, rid)
    return Command(
        name,
        rid,
        data.get("text", ""),
        data.get("speak", True),
        data.get("turn"),
        data.get("muted", name == "mute"),
    )


class RateLimiter:
    """A token bucket: ``rate`` per second sustained, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int, now: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._now = now
        self._tokens = float(burst)
        self._last = now()

    def allow(self) -> bool:
        now = self._now()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class RecentIds:
    """The last ``size`` accepted command ids, to run a redelivered command once."""

    def __init__(self, size: int = RECENT_IDS) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, rid: object) -> bool:
        return rid in self._ids

    def add(self, rid: str) -> None:
        self._ids[rid] = None
        self._ids.move_to_end(rid)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)


def publishable(topic: str) -> bool:
    """A topic a message may be published on: not empty, no wildcard, no NUL, not ``$``-reserved,
    at most 65,535 bytes (MQTT's limit)."""
    return (
        bool(topic)
        and not any(c in topic for c in "+#\0")
        and not topic.startswith("$")
        and len(topic.encode("utf-8")) <= MAX_TOPIC_BYTES
    )


def parse_state(payload: bytes, config: MqttConfig) -> str | None:
    """A device's state message as text, or None when it is not one (empty: a cleared retained
    message; over ``max_payload_bytes``; not UTF-8)."""
    if len(payload) > config.max_payload_bytes:
        return None
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    return text or None


def event_messages(event: Event, topics: Topics, config: MqttConfig) -> list[Outgoing]:
    """What one pipeline event publishes (README "MQTT" has the payloads)."""

    def msg(name: str, body: dict[str, Any], qos: int = 1, retain: bool = False) -> list[Outgoing]:
        return [Outgoing(topics.out(name), json.dumps(body, ensure_ascii=False), qos, retain)]

    if isinstance(event, ev.StateChanged):
        return msg("state", {"state": event.state, "muted": event.muted}, retain=True)
    if isinstance(event, ev.WakeDetected):
        body = {"wake_word": event.wake_word, "model": event.model, "at_ms": round(event.at_ms, 1)}
        return msg("wake", body | {"probability": round(event.probability, 3)})
    if isinstance(event, ev.StopWord):
        body = {"text": event.text, "at_ms": round(event.at_ms, 1), "stopped": list(event.stopped)}
        return msg("stop_word", body | {"alarms": event.alarms})
    if isinstance(event, ev.TranscriptReady):
        body = {"id": event.request_id, "turn": event.turn_id, "text": event.text, "source": event.source}
        return msg("transcript", body)
    if isinstance(event, ev.ReplyChunk):
        body = {"id": event.request_id, "turn": event.turn_id, "text": event.text, "final": False}
        return msg("reply", body | {"index": event.index}, qos=0)
    if isinstance(event, ev.ReplyFinished):
        body = {"id": event.request_id, "turn": event.turn_id, "text": event.text, "final": True}
        return msg("reply", body | {"finish_reason": event.finish_reason})
    if isinstance(event, ev.ReasoningText):
        if not config.publish_reasoning:
            return []
        return msg("reasoning", {"id": event.request_id, "turn": event.turn_id, "text": event.text}, qos=0)
    if isinstance(event, ev.TurnFinished):
        return msg(
            "latency", {"id": event.request_id, "turn": event.turn_id, "kind": event.kind} | event.record
        )
    if isinstance(event, ev.ErrorEvent):
        body = {"code": event.code, "message": event.message, "id": event.request_id, "turn": event.turn_id}
        return msg("error", body)
    if isinstance(event, ev.IntentRecognized):
        intent: dict[str, Any] = {"id": event.request_id, "turn": event.turn_id, "intent": event.intent}
        intent |= {"slots": event.slots, "text": event.text, "handled_by": event.handled_by}
        return msg("intent", intent)
    if isinstance(event, ev.DeviceCommand):
        if not publishable(event.topic):
            text = f"device {event.device!r}: cannot publish on topic {event.topic!r}"
            return msg("error", {"code": "bad_topic", "message": text, "id": event.request_id,
                                 "turn": event.turn_id})  # fmt: skip
        return [Outgoing(event.topic, event.payload, qos=1)]
    return []
