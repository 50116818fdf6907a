"""The MQTT bridge: commands in, events out, over one broker connection at a time.

    broker -> receive (parse, check, rate-limit) -> inbound queue -> execute -> Pipeline.ask/say
    Pipeline.events (bounded) -> translate -> outbox (bounded) -> publish -> broker

Topics live under ``<prefix>/<site>/`` (README "MQTT" has the schema; ``mqtt_protocol`` parses
and checks commands and translates events): commands ``ask say listen
cancel mute unmute`` (and ``command``, which names one); events ``state`` (retained),
``transcript reply reasoning latency intent error ack``; ``availability`` (retained ``online``, last
will ``offline``). Only ``ask``/``say`` queue (they may wait on the pipeline); the other commands
are instant and run on receipt. Text from MQTT enters only through ``Pipeline.ask`` (user role).

Devices: a ``DeviceCommand`` event (only the intent matcher makes one) publishes its payload on
the device's command topic. The state topics of declared devices are subscribed to, and what
they carry comes back as a ``DeviceState`` event on the pipeline's bus; nothing heard there is
ever run as a command. The bridge waits for no device: a command nobody answers costs nothing.
The devices follow a reload (``Pipeline.reconfigure`` calls ``devices_changed``): new state topics
are subscribed to and removed ones unsubscribed from on the live connection (a reconnect
subscribes to what is declared then), and only the command topics declared now are published on.

Connection: a loop around ``async with aiomqtt.Client(...)`` (a new client per connection):
subscribe, announce (availability, discovery, state), serve until the connection drops, wait a
doubling backoff capped at ``reconnect_max_s``, connect again. Refused credentials or an untrusted
certificate are ``auth_failed``: a long wait (``auth_retry_s``), never a tight retry loop. The voice
path never waits on MQTT: events come from a bounded EventBus queue, and publishing happens in the
bridge's own tasks. Cancelling ``run()`` publishes a retained ``offline`` before disconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import aiomqtt

from assistant.config import Config, DeviceConfig, MqttConfig
from assistant.errors import AssistantError, ConfigError
from assistant.events import DeviceCommand, DeviceState, Event
from assistant.mqtt.protocol import (
    Command,
    CommandError,
    Outgoing,
    RateLimiter,
    RecentIds,
    Topics,
    event_messages,
    parse_command,
    parse_state,
    publishable,
    tls_context,
)

if TYPE_CHECKING:
    from assistant.pipeline import Pipeline

_LOGGER = logging.getLogger(__name__)

OUTBOX_SIZE = 1000
EVENT_QUEUE = 1000
FOLLOW_RETRY_S = 1.0
"""Wait before trying again to follow the devices' state topics after the broker failed us."""


async def _stop(task: asyncio.Task[None] | None) -> None:
    """Cancel a helper task and wait for it (no-op for None or a finished task)."""
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait({task})


def _recheck_cancel() -> None:
    """Re-raise a cancellation that Python 3.11's ``asyncio.wait_for`` (inside aiomqtt's publish
    and subscribe) swallowed when it raced a completed call: without this, stopping could hang."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _state_topics(devices: Sequence[DeviceConfig], topics: Topics) -> dict[str, tuple[str, ...]]:
    """State topic -> the declared devices that report on it (several may share one). A state
    topic must be a plain topic of its own: no wildcard, not under ``<prefix>/<site>/`` or
    ``hermes/``, not Home Assistant's status."""
    by_topic: dict[str, tuple[str, ...]] = {}
    for device in devices:
        topic = device.state_topic
        if not topic:
            continue
        ours = topic.startswith((f"{topics.base}/", "hermes/")) or topic == topics.ha_status
        if not publishable(topic) or ours:
            raise ConfigError(
                f"devices[name = {device.name!r}].state_topic = {topic!r} is not allowed: a plain"
                " topic (no + or #) that is not one of the assistant's own"
            )
        by_topic[topic] = (*by_topic.get(topic, ()), device.name)
    return by_topic


def is_auth_failure(err: aiomqtt.MqttError) -> bool:
    """The broker refused our credentials, or its certificate is not trusted."""
    rc = getattr(err, "rc", None)
    if rc is not None and getattr(rc, "value", rc) in (4, 5, 134, 135):
        return True
    text = str(err).lower()
    return "certificate" in text or "ssl" in text and "handshake" in text


class MqttBridge:
    """Runs beside a pipeline (``pipeline.run(source, extra=[bridge.run()])``)."""

    def __init__(self, pipeline: Pipeline, config: MqttConfig) -> None:
        """The devices are the pipeline's ``[[devices]]``, as a reload changes them."""
        from assistant.mqtt.hass import discovery_messages
        from assistant.mqtt.hermes import Hermes

        self.pipeline = pipeline
        self.config = config
        self.topics = Topics(config)
        self.state = "disconnected"
        """``disconnected``, ``connecting``, ``connected``, ``auth_failed`` or ``stopped``."""
        self.stats: Counter[str] = Counter()
        """``attempts``, ``connects``, ``received``, ``accepted``, one count per error code,
        ``outbox_dropped``, ``busy_unreported``, ``unpublishable``, ``device_states`` (heard),
        ``state_ignored`` (not text), ``state_busy`` (over the rate limit)..."""
        self.connected = asyncio.Event()
        self.hermes = Hermes(config) if config.hermes else None
        self._discovery = discovery_messages(config, self.topics) if config.hass_discovery else []
        self._inbound: asyncio.Queue[Command] = asyncio.Queue(config.inbound_queue)
        self._outbox: asyncio.Queue[Outgoing] = asyncio.Queue(OUTBOX_SIZE)
        self._limiter = RateLimiter(config.rate_limit, config.rate_burst)
        self._state_limiter = RateLimiter(config.rate_limit, config.rate_burst)
        """A chattering device is cut off here, before it floods the pipeline's event bus."""
        self._recent = RecentIds()
        self._tls = tls_context(config) if config.tls else None
        self._events: asyncio.Queue[Event] | None = None
        self._devices: dict[str, tuple[str, ...]] = {}
        """State topic -> the devices that report on it."""
        self._command_topics: dict[str, str] = {}
        """Device -> its command topic: the only topics a ``DeviceCommand`` may publish on."""
        self._subscribed: set[str] = set()
        """The state topics the live connection is subscribed to."""
        self._resubscribe = asyncio.Event()
        """Set when ``_devices`` no longer matches ``_subscribed``."""
        self._heard: dict[str, str] = {}
        """State topic -> the last message heard on it, live or retained."""
        self._replayed: dict[str, str] = {}
        """State topic -> the last retained copy reported: each is reported once, however often
        reconnecting replays it."""
        self._set_devices(pipeline.config.devices)

    async def run(self) -> None:
        """Serve until cancelled: connection loop, event translation, command execution."""
        events = self._events = self.pipeline.events.subscribe(EVENT_QUEUE)
        self.devices_changed(self.pipeline.config)
        self.pipeline.reconfigured.append(self.devices_changed)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._execute_loop(), name="mqtt-execute")
                group.create_task(self._translate_loop(events), name="mqtt-events")
                await self._connection_loop()
        finally:
            with contextlib.suppress(ValueError):
                self.pipeline.reconfigured.remove(self.devices_changed)
            self.pipeline.events.unsubscribe(events)
            self._events = None
            self.state = "stopped"
            self.connected.clear()

    # -- devices --------------------------------------------------------------------------

    def devices_changed(self, config: Config) -> None:
        """A reloaded pipeline's devices (``Pipeline.reconfigured``). Their state topics were
        checked with the config (``config._check_state_topics``); one this bridge still refuses
        (its own topics differ from the pipeline's) leaves the running devices as they were."""
        try:
            self._set_devices(config.devices)
        except ConfigError as err:
            _LOGGER.error("mqtt: the devices were not reloaded: %s", err.message)

    def _set_devices(self, devices: Sequence[DeviceConfig]) -> None:
        by_topic = _state_topics(devices, self.topics)
        self._command_topics = {d.name: d.command_topic for d in devices if d.command_topic}
        self._devices = by_topic
        for topic in set(self._heard) - set(by_topic):
            self._heard.pop(topic, None)
            self._replayed.pop(topic, None)
        if set(by_topic) != self._subscribed:
            self._resubscribe.set()

    async def _follow_devices(self, client: aiomqtt.Client) -> None:
        """On the live connection: subscribe to new state topics, unsubscribe from removed ones."""
        while True:
            await self._resubscribe.wait()
            self._resubscribe.clear()
            declared = set(self._devices)
            gone, new = sorted(self._subscribed - declared), sorted(declared - self._subscribed)
            try:
                if gone:
                    await client.unsubscribe(gone)
                    self._subscribed.difference_update(gone)
                if new:
                    await client.subscribe([(topic, 1) for topic in new])
                    self._subscribed.update(new)
            except aiomqtt.MqttError as err:  # a lost connection's reconnect subscribes anew
                _LOGGER.warning("mqtt: following the devices' state topics failed: %s; trying again", err)
                await asyncio.sleep(FOLLOW_RETRY_S)
                self._resubscribe.set()
                continue
            _recheck_cancel()
            if gone or new:
                _LOGGER.info("mqtt: device state topics: +%s -%s", new, gone)

    # -- connection -------------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        cfg = self.config
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username or None,
            password=cfg.password or None,
            identifier=cfg.client_id or f"assistant-{cfg.site}",
            will=aiomqtt.Will(self.topics.availability, "offline", qos=1, retain=True),
            keepalive=cfg.keepalive_s,
            timeout=cfg.connect_timeout_s,
            tls_context=self._tls,
            max_queued_incoming_messages=OUTBOX_SIZE,
            logger=_LOGGER,
        )

    async def _connection_loop(self) -> None:
        delay = self.config.reconnect_min_s
        while True:
            self.state = "connecting"
            self.stats["attempts"] += 1
            try:
                async with self._client() as client:
                    delay = self.config.reconnect_min_s
                    await self._serve(client)
            except aiomqtt.MqttError as err:
                self.connected.clear()
                if is_auth_failure(err):
                    self.state = "auth_failed"
                    self.stats["auth_failed"] += 1
                    wait = self.config.auth_retry_s
                    _LOGGER.error("mqtt: broker refused us (%s); next try in %.0f s", str(err), wait)
                else:
                    self.state = "disconnected"
                    wait = delay * random.uniform(0.8, 1.0)
                    delay = min(delay * 2, self.config.reconnect_max_s)
                    _LOGGER.warning("mqtt: %s; reconnecting in %.1f s", str(err), wait)
            await asyncio.sleep(wait)

    async def _serve(self, client: aiomqtt.Client) -> None:
        subscriptions = [*self.topics.commands, self.topics.command]
        if self._discovery:
            subscriptions.append(self.topics.ha_status)
        if self.hermes is not None:
            subscriptions.extend(self.hermes.topics())
        self._resubscribe.clear()  # subscribing now to the devices declared now
        self._subscribed = set(self._devices)
        subscriptions.extend(self._subscribed)
        publisher: asyncio.Task[None] | None = None
        follower: asyncio.Task[None] | None = None
        try:  # a stop anywhere from here on (announcing included) still says goodbye
            await client.subscribe([(topic, 1) for topic in subscriptions])
            while not self._outbox.empty():  # stale events from while we were away
                self._outbox.get_nowait()
            await client.publish(self.topics.availability, "online", qos=1, retain=True)
            for item in self._discovery:
                await client.publish(item.topic, item.payload, item.qos, item.retain)
            state = {"state": self.pipeline.state, "muted": self.pipeline.muted}
            await client.publish(self.topics.out("state"), json.dumps(state), qos=1, retain=True)
            self.state = "connected"
            self.stats["connects"] += 1
            self.connected.set()
            _LOGGER.info(
                "mqtt: connected to %s:%d as %s", self.config.host, self.config.port, self.topics.base
            )
            publisher = asyncio.create_task(self._publish_loop(client), name="mqtt-publish")
            follower = asyncio.create_task(self._follow_devices(client), name="mqtt-devices")
            _recheck_cancel()
            async for message in client.messages:
                self._receive(message)
        except asyncio.CancelledError:
            await _stop(follower)
            await _stop(publisher)
            await self._goodbye(client)
            raise
        finally:
            await _stop(follower)
            await _stop(publisher)

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """Stopping: publish what is still queued (within 2 s), then a retained ``offline``."""
        if self._events is not None:
            while not self._events.empty():
                self._translate(self._events.get_nowait())
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(2):
                while not self._outbox.empty():
                    message = self._outbox.get_nowait()
                    await client.publish(message.topic, message.payload, message.qos, message.retain)
                await client.publish(self.topics.availability, "offline", qos=1, retain=True)

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        while True:
            message = await self._outbox.get()
            try:
                await client.publish(message.topic, message.payload, message.qos, message.retain)
            except aiomqtt.MqttError as err:
                _LOGGER.debug("mqtt: publish to %s failed: %s", message.topic, err)
                return
            except ValueError as err:  # paho refuses the topic or payload: drop it, go on
                self.stats["unpublishable"] += 1
                _LOGGER.warning("mqtt: cannot publish on %r: %s", message.topic, err)
            _recheck_cancel()

    def post(self, message: Outgoing, *, low_priority: bool = False) -> None:
        """Queue one message to publish; never blocks (drops the oldest when full)."""
        if low_priority and self._outbox.qsize() >= OUTBOX_SIZE // 2:
            self.stats["busy_unreported"] += 1
            return
        if self._outbox.full():
            self._outbox.get_nowait()
            self.stats["outbox_dropped"] += 1
        self._outbox.put_nowait(message)

    # -- inbound --------------------------------------------------------------------------

    def _receive(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        raw = message.payload
        payload = raw if isinstance(raw, bytes) else str(raw if raw is not None else "").encode()
        self.stats["received"] += 1
        if topic == self.topics.ha_status:
            if payload.strip() == b"online":
                for item in self._discovery:
                    self.post(item)
            return
        if topic in self._devices:
            self._device_state(topic, payload, retained=message.retain)
            return
        ours = topic in self.topics.commands or topic == self.topics.command
        if not ours and not (self.hermes is not None and topic.startswith("hermes/")):
            # a state topic just unsubscribed from (a reload removed its device): not a command
            _LOGGER.debug("mqtt: ignored a message on %s, no longer subscribed", topic)
            return
        rid: str | None = None
        try:
            if message.retain:
                raise CommandError("retained", f"{topic}: retained commands are never run; clear it")
            if self.hermes is not None and topic.startswith("hermes/"):
                commands, replies = self.hermes.parse(topic, payload)
                for reply in replies:
                    self.post(reply)
            else:
                name = self.topics.commands.get(topic)
                commands = [parse_command(name, payload, self.config)]
            for command in commands:
                rid = command.id
                self._admit(command)
        except CommandError as err:
            self._refuse(err, rid)

    def _device_state(self, topic: str, payload: bytes, *, retained: bool) -> None:
        """A declared device's state topic spoke: report it on the pipeline's bus (never run)."""
        text = parse_state(payload, self.config)
        if text is None:
            self.stats["state_ignored"] += 1
            _LOGGER.debug("mqtt: ignored %d bytes on state topic %s", len(payload), topic)
            return
        self.stats["device_states"] += 1
        if not self._state_limiter.allow():
            self.stats["state_busy"] += 1
            return
        if retained:
            if text in (self._heard.get(topic), self._replayed.get(topic)):
                return
            self._replayed[topic] = text
        self._heard[topic] = text
        for device in self._devices[topic]:
            self.pipeline.events.publish(DeviceState(device, text, retained))

    def _admit(self, command: Command) -> None:
        rid = command.id
        if rid is not None and rid in self._recent:
            raise CommandError("duplicate", f"command {rid!r} was already run", rid)
        if not self._limiter.allow():
            raise CommandError("busy", "too many commands: rate limit", rid)
        if command.name in ("ask", "say"):
            if self._inbound.full() or self.pipeline.busy():
                raise CommandError("busy", "the assistant is saturated: try again later", rid)
            self._inbound.put_nowait(command)
        else:
            self._run_now(command)
        if rid is not None:
            self._recent.add(rid)
        self.stats["accepted"] += 1

    def _run_now(self, command: Command) -> None:
        turns: list[int] = []
        if command.name == "cancel":
            turns = self.pipeline.cancel(command.turn)
        elif command.name in ("mute", "unmute"):
            self.pipeline.set_muted(command.name == "mute" and command.muted)
        elif command.name == "listen":
            self.pipeline.listen()
        self._ack(command, turns)

    def _ack(self, command: Command, turns: list[int]) -> None:
        body = {"id": command.id, "command": command.name, "turns": turns}
        self.post(Outgoing(self.topics.out("ack"), json.dumps(body), qos=1))

    def _refuse(self, err: CommandError, rid: str | None) -> None:
        rid = err.request_id or rid
        self.stats[err.code] += 1
        _LOGGER.info("mqtt: refused [%s] %s", err.code, err.message)
        body = {"code": err.code, "message": err.message, "id": rid}
        self.post(
            Outgoing(self.topics.out("error"), json.dumps(body), qos=1), low_priority=err.code == "busy"
        )

    async def _execute_loop(self) -> None:
        while True:
            command = await self._inbound.get()
            try:
                if command.name == "ask":
                    turn = await self.pipeline.ask(command.text, command.id, speak=command.speak)
                else:
                    turn = await self.pipeline.say(command.text, command.id)
            except (asyncio.CancelledError, TimeoutError):
                raise
            except AssistantError as err:
                self._refuse(CommandError(err.code, err.message, command.id), None)
                continue
            except Exception as err:  # a bug must not end the bridge
                _LOGGER.exception("mqtt: %s failed", command.name)
                self._refuse(CommandError("internal_error", repr(err), command.id), None)
                continue
            self._ack(command, [turn])

    async def _translate_loop(self, events: asyncio.Queue[Event]) -> None:
        while True:
            self._translate(await events.get())

    def _translate(self, event: Event) -> None:
        if isinstance(event, DeviceCommand) and self._command_topics.get(event.device) != event.topic:
            why = f"device {event.device!r} is not declared with command_topic {event.topic!r}"
            self._refuse(CommandError("bad_topic", why, event.request_id), None)
            return
        for message in event_messages(event, self.topics, self.config):
            self.post(message)
        if self.hermes is not None:
            for message in self.hermes.on_event(event):
                self.post(message)
