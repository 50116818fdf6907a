"""Local intents over MQTT, on a real mosquitto: the ``intent`` payload, Hermes' intent topics,
device commands on their command topics, device state topics heard back as ``DeviceState``
events, and Home Assistant's ``intent`` event entity."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from assistant.audio.sinks import MemorySink
from assistant.audio.sources import IdleSource
from assistant.config import Config, DeviceConfig, MqttConfig, load_config
from assistant.daemon import Daemon
from assistant.engines import Engines
from assistant.errors import ConfigError
from assistant.events import (
    DeviceCommand,
    DeviceState,
    Event,
    IntentNotRecognized,
    IntentRecognized,
    StopWord,
    TurnFinished,
    WakeDetected,
)
from assistant.mqtt.bridge import MqttBridge
from assistant.mqtt.hass import INTENT_EVENT_TYPES, event_configs
from assistant.mqtt.protocol import Outgoing, Topics, event_messages
from assistant.pipeline import Pipeline
from assistant.service.lifecycle import ConfigReloader

from .fakes import FakeChat, FakeSynth, FakeTranscriber
from .mosquitto import Broker, Recorder, running_broker
from .test_mqtt import mqtt_config


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running_broker(tmp_path)


T = "assistant/default"
LIGHT = DeviceConfig(name="kitchen light", area="kitchen", command_topic="cmnd/kitchen/POWER",
                     state_topic="stat/kitchen/POWER")  # fmt: skip
LAMP = DeviceConfig(name="lamp", command_topic="cmnd/lamp/POWER", payload_off="off")
EVENT_CONFIG = "homeassistant/event/assistant_default/intent/config"


class Running:
    """A pipeline with fake engines, its bridge, and every event the pipeline's bus carried."""

    def __init__(self, pipeline: Pipeline, bridge: MqttBridge, seen: asyncio.Queue[Event]) -> None:
        self.pipeline = pipeline
        self.bridge = bridge
        self._seen = seen
        self.events: list[Event] = []

    def states(self) -> list[DeviceState]:
        while not self._seen.empty():
            self.events.append(self._seen.get_nowait())
        return [e for e in self.events if isinstance(e, DeviceState)]


def pipeline_with(cfg: MqttConfig, chat: FakeChat, devices: tuple[DeviceConfig, ...]) -> Pipeline:
    config = replace(Config(), input=replace(Config().input, realtime=False), mqtt=cfg, devices=devices)
    return Pipeline(config, Engines(FakeTranscriber([]), chat, FakeSynth()), MemorySink())


@contextlib.asynccontextmanager
async def daemon(
    cfg: MqttConfig, chat: FakeChat, devices: tuple[DeviceConfig, ...] = (LIGHT, LAMP)
) -> AsyncIterator[Running]:
    """As ``test_mqtt.daemon``, with declared devices, and the bus watched from the start."""
    pipeline = pipeline_with(cfg, chat, devices)
    bridge = MqttBridge(pipeline, cfg)
    seen = pipeline.events.subscribe()
    source = IdleSource()
    task = asyncio.create_task(Daemon(pipeline, [("mqtt", bridge.run)]).run(source), name="daemon")
    try:
        await asyncio.wait_for(bridge.connected.wait(), 10)
        yield Running(pipeline, bridge, seen)
    finally:
        source.stop()
        await asyncio.wait_for(task, 10)


TURN_ON = IntentRecognized(5, "q1", "HassTurnOn", {"area": "kitchen", "domain": "light"},
                           "turn on the kitchen lights")  # fmt: skip


async def test_intent_hermes_and_device_command_reach_a_subscriber(broker: Broker) -> None:
    chat = FakeChat("Ok.")
    rec = Recorder(broker, [f"{T}/#", "hermes/#", "cmnd/#"])
    async with rec.running(), daemon(mqtt_config(broker, hermes=True), chat) as run:
        bus = run.pipeline.events
        bus.publish(TURN_ON)
        bus.publish(DeviceCommand(5, "q1", "kitchen light", "cmnd/kitchen/POWER", "ON"))
        bus.publish(
            IntentRecognized(6, None, "HassStartTimer", {"minutes": 10}, "set a timer for ten minutes")
        )
        bus.publish(IntentNotRecognized(7, None, "what is the capital of France"))
        await rec.wait_for(lambda: rec.on("hermes/nlu/intentNotRecognized"))
        await rec.wait_for(lambda: len(rec.on(f"{T}/intent")) == 2 and rec.on("cmnd/kitchen/POWER"))
    assert rec.on(f"{T}/intent") == [
        {"id": "q1", "turn": 5, "intent": "HassTurnOn", "slots": {"area": "kitchen", "domain": "light"},
         "text": "turn on the kitchen lights", "handled_by": "intent"},
        {"id": None, "turn": 6, "intent": "HassStartTimer", "slots": {"minutes": 10},
         "text": "set a timer for ten minutes", "handled_by": "intent"},
    ]  # fmt: skip
    assert rec.on("cmnd/kitchen/POWER") == ["ON"]
    (on,) = rec.on("hermes/intent/HassTurnOn")
    assert on["input"] == "turn on the kitchen lights" and on["siteId"] == "default"
    assert on["intent"] == {"intentName": "HassTurnOn", "confidenceScore": 1.0}
    assert on["sessionId"] == "turn-5" and on["id"] == "q1"
    assert on["slots"][0] == {"entity": "area", "slotName": "area", "rawValue": "kitchen",
                              "value": {"kind": "Custom", "value": "kitchen"}, "confidence": 1.0}  # fmt: skip
    (timer,) = rec.on("hermes/intent/HassStartTimer")
    assert (
        timer["slots"][0]["value"] == {"kind": "Number", "value": 10}
        and timer["slots"][0]["rawValue"] == "10"
    )
    (missed,) = rec.on("hermes/nlu/intentNotRecognized")
    assert missed == {"input": "what is the capital of France", "siteId": "default", "sessionId": "turn-7",
                      "id": None, "customData": None}  # fmt: skip
    assert not chat.calls  # events are told, never run
    live = [m for m in rec.messages if m.topic.value in (f"{T}/intent", "cmnd/kitchen/POWER")]
    assert not any(m.retain for m in live)


def test_intent_and_device_messages_are_qos1_and_not_retained() -> None:
    config = MqttConfig()
    topics = Topics(config)
    (intent,) = event_messages(TURN_ON, topics, config)
    assert (intent.topic, intent.qos, intent.retain) == (f"{T}/intent", 1, False)
    command = DeviceCommand(5, None, "plug", "zigbee2mqtt/plug/set", '{"state": "OFF"}')
    assert event_messages(command, topics, config) == [
        Outgoing("zigbee2mqtt/plug/set", '{"state": "OFF"}', qos=1, retain=False)
    ]
    for bad in ("", "cmnd/+/POWER", "cmnd/#", "$SYS/x"):
        (error,) = event_messages(replace(command, topic=bad), topics, config)
        assert error.topic == f"{T}/error" and json.loads(error.payload)["code"] == "bad_topic"


async def test_only_declared_command_topics_are_published_on_and_a_bad_one_stops_nothing(
    broker: Broker,
) -> None:
    rec = Recorder(broker, [f"{T}/#", "cmnd/#", "$SYS/x"])
    oddity = DeviceConfig(name="odd", command_topic="$SYS/x")
    async with rec.running(), daemon(mqtt_config(broker), FakeChat("Ok."), (LAMP, oddity)) as run:
        bus = run.pipeline.events
        bus.publish(DeviceCommand(1, "d1", "oven", "cmnd/oven/POWER", "ON"))  # not declared
        bus.publish(DeviceCommand(2, "d2", "lamp", "cmnd/kitchen/POWER", "ON"))  # not its topic
        bus.publish(DeviceCommand(3, "d3", "odd", "$SYS/x", "ON"))  # declared, not publishable
        run.bridge.post(Outgoing("cmnd/#", "ON", qos=1))  # past every check: paho's ValueError
        bus.publish(DeviceCommand(4, "d4", "lamp", "cmnd/lamp/POWER", "off"))
        await rec.wait_for(lambda: rec.on("cmnd/lamp/POWER") == ["off"])
        errors = await rec.wait_for(lambda: len(rec.on(f"{T}/error")) == 3 and rec.on(f"{T}/error"))
        assert [(e["code"], e["id"]) for e in errors] == [("bad_topic", f"d{i}") for i in (1, 2, 3)]
        assert run.bridge.stats["unpublishable"] == 1
    assert [m.topic.value for m in rec.messages if m.topic.value.startswith("cmnd/")] == ["cmnd/lamp/POWER"]


async def test_state_topic_retained_reported_once_live_reported_garbage_ignored(broker: Broker) -> None:
    chat = FakeChat("Ok.")
    rec = Recorder(broker, [f"{T}/#"])
    topic = LIGHT.state_topic
    cfg = mqtt_config(broker, max_payload_bytes=4096)
    async with rec.running():
        await rec.publish(topic, '{"command": "ask", "text": "open the door"}', retain=True)
        async with daemon(cfg, chat) as run:
            retained = DeviceState(
                "kitchen light", '{"command": "ask", "text": "open the door"}', retained=True
            )
            await rec.wait_for(lambda: run.states() == [retained])
            for garbage in (b"\xff\xfe\xfd", b"   ", b"x" * 5000):
                await rec.publish(topic, garbage)
            await rec.publish(topic, "ON")
            await rec.wait_for(lambda: len(run.states()) == 2)
            assert run.states()[1] == DeviceState("kitchen light", "ON", retained=False)
            assert run.bridge.stats["state_ignored"] == 3
            # A reconnect (another client takes our client id) replays the retained copy: not reported again.
            with contextlib.suppress(aiomqtt.MqttError):
                async with aiomqtt.Client(broker.host, broker.port, identifier="assistant-default"):
                    pass
            await rec.wait_for(lambda: run.bridge.stats["connects"] == 2)
            await rec.publish(topic, "OFF")
            await rec.wait_for(lambda: len(run.states()) == 3)
            assert run.states()[2] == DeviceState("kitchen light", "OFF", retained=False)
            assert run.bridge.stats["device_states"] == 4  # retained twice, ON, OFF
        await rec.publish(topic, b"", retain=True)  # clear it
    assert not chat.calls  # a state is never a command
    assert not rec.on(f"{T}/error") and not rec.on(f"{T}/ack") and not rec.on(f"{T}/latency")


async def test_a_chattering_device_is_cut_off_before_the_event_bus(broker: Broker) -> None:
    rec = Recorder(broker, [])
    cfg = mqtt_config(broker, rate_limit=10.0, rate_burst=5)
    async with rec.running(), daemon(cfg, FakeChat("Ok.")) as run:
        assert rec.client is not None
        for i in range(200):
            await rec.client.publish(LIGHT.state_topic, f"POWER {i}", qos=0)
        await rec.wait_for(lambda: run.bridge.stats["device_states"] == 200)
        reported = len(run.states())
        assert reported + run.bridge.stats["state_busy"] == 200 and reported < 100
        assert run.pipeline.events.dropped == 0


def test_state_topics_that_are_wildcards_or_ours_are_refused() -> None:
    ours = (f"{T}/ask", f"{T}/intent", "homeassistant/status", "hermes/tts/say", "stat/+/POWER", "stat/#")
    for bad in ours:
        with pytest.raises(ConfigError, match="state_topic"):
            device = DeviceConfig(name="lamp", state_topic=bad)
            MqttBridge(pipeline_with(MqttConfig(), FakeChat(), (device,)), MqttConfig())
    shared = (
        DeviceConfig(name="desk lamp", state_topic="stat/lamp"),
        DeviceConfig(name="lamp 2", state_topic="stat/lamp"),
    )
    bridge = MqttBridge(pipeline_with(MqttConfig(), FakeChat(), (*shared, LAMP)), MqttConfig())
    assert bridge._devices == {"stat/lamp": ("desk lamp", "lamp 2")}


EVENT_KEYS = {"state_topic", "event_types", "value_template", "device_class"}
"""Keys of Home Assistant's MQTT event platform (home-assistant.io/integrations/event.mqtt), besides
the common ones."""


async def test_discovery_event_entity_published_and_again_when_home_assistant_returns(broker: Broker) -> None:
    from .test_mqtt_hass import COMMON, DEVICE

    rec = Recorder(broker, ["homeassistant/#"])
    async with rec.running(), daemon(mqtt_config(broker), FakeChat("Ok.")):
        (entity,) = await rec.wait_for(lambda: rec.on(EVENT_CONFIG))
        later = Recorder(broker, [EVENT_CONFIG])
        async with later.running():  # it is retained: a late subscriber gets it too
            await later.wait_for(lambda: [m for m in later.messages if m.retain])
        await rec.publish("homeassistant/status", "online")
        await rec.wait_for(lambda: len(rec.on(EVENT_CONFIG)) == 2)
    assert {"state_topic", "event_types"} <= set(entity) <= EVENT_KEYS | COMMON
    assert set(entity["device"]) <= DEVICE and entity["device"]["name"] == "Voice assistant"
    assert entity["state_topic"] == f"{T}/intent" and entity["unique_id"] == "assistant_default_intent"
    assert entity["availability_topic"] == f"{T}/availability"
    assert {"HassTurnOn", "HassTurnOff", "HassStartTimer", "HassCancelTimer", "HassTimerStatus",
            "HassGetCurrentTime", "HassGetCurrentDate", "HassNevermind", "HassSetVolume"} <= set(
        entity["event_types"])  # fmt: skip


def test_the_value_template_makes_home_assistants_event_payload() -> None:
    """Rendered as Home Assistant does (a sandboxed Jinja environment, ``value_json`` = the payload),
    then read as its MQTT event platform reads it: ``event_type`` popped, the rest attributes."""
    sandbox = pytest.importorskip("jinja2.sandbox")
    config = MqttConfig()
    entity = event_configs(config, Topics(config))[("event", "intent")]
    (message,) = event_messages(TURN_ON, Topics(config), config)
    template = sandbox.ImmutableSandboxedEnvironment().from_string(entity["value_template"])
    attributes = json.loads(template.render(value=message.payload, value_json=json.loads(message.payload)))
    assert attributes.pop("event_type") == "HassTurnOn" in entity["event_types"]
    assert attributes == {"area": "kitchen", "domain": "light", "text": "turn on the kitchen lights",
                          "turn": 5, "id": "q1"}  # fmt: skip
    assert set(INTENT_EVENT_TYPES) == set(entity["event_types"])


@pytest.mark.parametrize(
    ("event", "name", "attributes"),
    [
        (WakeDetected("Okay Nabu", "okay_nabu", 1510.0, 0.97), "wake",
         {"wake_word": "Okay Nabu", "model": "okay_nabu", "at_ms": 1510.0, "probability": 0.97}),
        (StopWord("Stop.", 8200.0, [4], 1), "stop_word",
         {"text": "Stop.", "at_ms": 8200.0, "stopped": [4], "alarms": 1}),
    ],
)  # fmt: skip
def test_the_wake_and_stop_word_events_reach_home_assistant(
    event: Event, name: str, attributes: dict[str, Any]
) -> None:
    """Each published on its own topic, read by its own event entity as Home Assistant renders it."""
    sandbox = pytest.importorskip("jinja2.sandbox")
    config = MqttConfig()
    entity = event_configs(config, Topics(config))[("event", name)]
    (message,) = event_messages(event, Topics(config), config)
    assert message.topic == entity["state_topic"] == f"{T}/{name}"
    template = sandbox.ImmutableSandboxedEnvironment().from_string(entity["value_template"])
    rendered = json.loads(template.render(value=message.payload, value_json=json.loads(message.payload)))
    assert rendered.pop("event_type") == name and entity["event_types"] == [name]
    assert rendered == attributes


async def test_the_latency_record_carries_the_intent(broker: Broker) -> None:
    record: dict[str, Any] = {"outcome": "answered", "intent": "HassTurnOn", "handled_by": "intent"}
    rec = Recorder(broker, [f"{T}/latency"])
    async with rec.running(), daemon(mqtt_config(broker), FakeChat("Ok.")) as run:
        run.pipeline.events.publish(TurnFinished(5, "q1", record, "ask"))
        (latency,) = await rec.wait_for(lambda: rec.on(f"{T}/latency"))
    assert latency["intent"] == "HassTurnOn" and latency["handled_by"] == "intent"


HOME_BEFORE = """
[[devices]]
name = "kitchen light"
area = "kitchen"
command_topic = "cmnd/kitchen/POWER"
state_topic = "stat/kitchen/POWER"

[[devices]]
name = "lamp"
command_topic = "cmnd/lamp/POWER"
"""
HOME_AFTER = """
[[devices]]
name = "lamp"
command_topic = "cmnd/lamp/POWER"

[[devices]]
name = "porch light"
aliases = ["front light"]
area = "porch"
command_topic = "zigbee2mqtt/porch/set"
payload_on = '{"state": "ON"}'
payload_off = '{"state": "OFF"}'
state_topic = "zigbee2mqtt/porch"
"""


async def test_a_reload_adds_and_removes_devices_on_the_running_daemon(
    broker: Broker, tmp_path: Path
) -> None:
    """The pipeline TOML gets a new device (with its own command and state topics) and loses one;
    the reloader (SIGHUP's) applies it live: the new one is switched over the broker and heard on
    its state topic, the old one no longer matches, is no longer heard, and may not be published
    for; "the lights" now means the new ``intents.area``'s."""
    path = tmp_path / "home.toml"
    head = f"""
[input]
realtime = false

[mqtt]
enabled = true
host = "{broker.host}"
port = {broker.port}
reconnect_min_s = 0.05
reconnect_max_s = 0.4
rate_limit = 1000.0
rate_burst = 1000

[intents]
timers_file = "{tmp_path / "timers.json"}"
"""
    path.write_text(head + HOME_BEFORE)
    config = load_config(str(path))
    chat = FakeChat("Ok.")
    pipeline = Pipeline(config, Engines(FakeTranscriber([]), chat, FakeSynth()), MemorySink())
    bridge = MqttBridge(pipeline, config.mqtt)
    reloader = ConfigReloader(config, lambda: load_config(str(path)), pipeline.reconfigure)
    run = Running(pipeline, bridge, pipeline.events.subscribe())
    rec = Recorder(broker, [f"{T}/#", "cmnd/#", "zigbee2mqtt/#"])
    source = IdleSource()

    async def ask(text: str, rid: str, device: tuple[str, str] | None = None) -> dict[str, Any]:
        """``text`` asked over the broker; ``device``: (its state topic, what it reports once it
        was switched). Returns the turn's latency record."""
        commands = len(switched())
        await rec.publish(f"{T}/ask", {"text": text, "id": rid, "speak": False})
        if device is not None:
            await rec.wait_for(lambda: len(switched()) > commands)
            await rec.publish(*device)
        (record,) = await rec.wait_for(lambda: [r for r in rec.on(f"{T}/latency") if r["id"] == rid])
        return dict(record)

    def switched() -> list[aiomqtt.Message]:
        topics = ("cmnd/kitchen/POWER", "cmnd/lamp/POWER", "zigbee2mqtt/porch/set")
        return [m for m in rec.messages if m.topic.value in topics]

    def intent(rid: str) -> list[tuple[str, dict[str, Any]]]:
        return [(m["intent"], m["slots"]) for m in rec.on(f"{T}/intent") if m["id"] == rid]

    async with rec.running():
        task = asyncio.create_task(Daemon(pipeline, [("mqtt", bridge.run)]).run(source), name="daemon")
        try:
            await asyncio.wait_for(bridge.connected.wait(), 10)
            before = await ask("turn on the kitchen light", "a1", ("stat/kitchen/POWER", "ON"))
            assert before["handled_by"] == "intent" and intent("a1") == [
                ("HassTurnOn", {"name": "kitchen light"})
            ]
            assert rec.on("cmnd/kitchen/POWER") == ["ON"]
            assert run.states() == [DeviceState("kitchen light", "ON", retained=False)]

            path.write_text(head.replace("[intents]", '[intents]\narea = "porch"') + HOME_AFTER)
            change = await reloader()
            assert change is not None and change.restart == ()
            assert change.live == ("intents.area", "devices")
            assert pipeline.config.devices == reloader.current.devices and len(pipeline.config.devices) == 2
            await rec.wait_for(lambda: bridge._subscribed == {"zigbee2mqtt/porch"})

            on = await ask("turn on the porch light", "a2", ("zigbee2mqtt/porch", '{"state": "ON"}'))
            assert on["handled_by"] == "intent" and intent("a2") == [("HassTurnOn", {"name": "porch light"})]
            assert rec.on("zigbee2mqtt/porch/set") == [{"state": "ON"}]
            assert run.states()[1:] == [DeviceState("porch light", '{"state": "ON"}', retained=False)]
            (reply,) = [r["text"] for r in rec.on(f"{T}/reply") if r["id"] == "a2" and r["final"]]
            assert reply == "Turned on the light."  # the state it reported on its new topic, in time

            # the removed device: not heard (unsubscribed: the marker after it arrives alone), not
            # matched (the LLM answers), not published for
            await rec.publish("stat/kitchen/POWER", "OFF")
            await rec.publish("zigbee2mqtt/porch", '{"state": "OFF"}')
            await rec.wait_for(lambda: len(run.states()) == 3)
            assert run.states()[2].device == "porch light"
            gone = await ask("turn on the kitchen light", "a3")
            assert (gone["handled_by"], gone["intent"]) == ("llm", None) and intent("a3") == []
            assert len(chat.calls) == 1
            pipeline.events.publish(DeviceCommand(99, "d1", "kitchen light", "cmnd/kitchen/POWER", "ON"))
            (refused,) = await rec.wait_for(lambda: rec.on(f"{T}/error"))
            assert (refused["code"], refused["id"]) == ("bad_topic", "d1")
            assert rec.on("cmnd/kitchen/POWER") == ["ON"]  # only the switch before the reload

            # the room is the porch now: "the lights" are its lights (not the lamp, which has no room)
            off = await ask("turn off the lights", "a4", ("zigbee2mqtt/porch", '{"state": "OFF"}'))
            assert off["handled_by"] == "intent"
            assert intent("a4") == [("HassTurnOff", {"domain": "light", "area": "porch"})]
            assert rec.on("zigbee2mqtt/porch/set") == [{"state": "ON"}, {"state": "OFF"}]
            assert rec.on("cmnd/lamp/POWER") == []
        finally:
            source.stop()
            await asyncio.wait_for(task, 10)
    assert bridge.stats["device_states"] == 4  # kitchen ON, porch ON, OFF, OFF: not the kitchen's OFF
