"""Home Assistant discovery payloads against HA's documented keys; Hermes; ``doctor``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from assistant.config import Config, MqttConfig
from assistant.doctor import Finding, check_mqtt, run_checks
from assistant.events import TranscriptReady
from assistant.mqtt.hass import discovery_messages, entity_configs
from assistant.mqtt.protocol import Topics

from .fakes import FakeChat
from .mosquitto import Broker, Recorder, running_broker
from .test_mqtt import daemon, mqtt_config


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running_broker(tmp_path)


COMMON = {
    "name", "unique_id", "device", "origin", "availability_topic", "payload_available",
    "payload_not_available", "icon", "entity_category", "qos", "enabled_by_default",
    "json_attributes_topic", "json_attributes_template", "encoding",
}  # fmt: skip
"""Keys every MQTT platform documents (home-assistant.io/integrations/<platform>.mqtt)."""
SCHEMA: dict[str, tuple[set[str], set[str]]] = {
    "sensor": (set(), {"state_topic", "value_template", "unit_of_measurement", "device_class",
                       "state_class", "expire_after", "force_update", "suggested_display_precision"}),
    "binary_sensor": ({"state_topic"}, {"value_template", "payload_on", "payload_off", "device_class",
                                        "expire_after", "force_update", "off_delay"}),
    "switch": ({"command_topic"}, {"state_topic", "value_template", "payload_on", "payload_off",
                                   "state_on", "state_off", "optimistic", "retain", "device_class"}),
    "button": ({"command_topic"}, {"payload_press", "command_template", "device_class", "retain"}),
    "notify": ({"command_topic"}, {"command_template", "retain"}),
    "text": ({"command_topic"}, {"command_template", "state_topic", "value_template", "max", "min",
                                 "mode", "pattern", "retain", "optimistic"}),
}  # fmt: skip
"""(required, optional) keys per platform, from Home Assistant's MQTT platform docs."""
DEVICE = {"identifiers", "connections", "name", "manufacturer", "model", "model_id", "sw_version",
          "hw_version", "serial_number", "suggested_area", "via_device", "configuration_url"}  # fmt: skip


def test_discovery_payloads_use_only_documented_keys() -> None:
    config = MqttConfig(site="kitchen")
    topics = Topics(config)
    entities = entity_configs(config, topics)
    assert {c for c, _ in entities} == set(SCHEMA)
    for (component, object_id), payload in entities.items():
        required, optional = SCHEMA[component]
        assert required <= set(payload), (component, object_id)
        assert set(payload) <= required | optional | COMMON, (component, set(payload) - optional - COMMON)
        assert set(payload["device"]) <= DEVICE and payload["device"]["identifiers"] == ["assistant_kitchen"]
        assert payload["availability_topic"] == "assistant/kitchen/availability"
        assert payload["unique_id"] == f"assistant_kitchen_{object_id}"
        for key in ("state_topic", "command_topic"):
            assert payload.get(key, "assistant/kitchen/").startswith("assistant/kitchen/")
    messages = discovery_messages(config, topics)
    assert all(m.retain and m.topic.endswith("/config") for m in messages)
    assert "homeassistant/switch/assistant_kitchen/mute/config" in {m.topic for m in messages}
    assert json.loads(messages[0].payload)["device"]["name"] == "Voice assistant (kitchen)"


async def test_hermes_say_session_and_text_captured(broker: Broker) -> None:
    rec = Recorder(broker, ["hermes/#"])
    async with rec.running(), daemon(mqtt_config(broker, hermes=True), FakeChat("Ok.")) as (pipeline, _):
        await rec.publish("hermes/tts/say", {"text": "Dinner is ready.", "id": "h1", "siteId": "default"})
        await rec.wait_for(lambda: [m for m in rec.on("hermes/tts/sayFinished") if m["id"] == "h1"])
        await rec.publish("hermes/tts/say", {"text": "Not for us.", "id": "h2", "siteId": "garage"})
        await rec.publish(
            "hermes/dialogueManager/startSession", {"init": {"type": "notification", "text": "Hi."}}
        )
        (started,) = await rec.wait_for(lambda: rec.on("hermes/dialogueManager/sessionStarted"))
        (ended,) = await rec.wait_for(lambda: rec.on("hermes/dialogueManager/sessionEnded"))
        assert ended["sessionId"] == started["sessionId"] and ended["termination"] == {"reason": "nominal"}
        await rec.publish("hermes/dialogueManager/startSession", {"init": {"type": "action"}})
        await rec.wait_for(lambda: len(rec.on("hermes/dialogueManager/sessionStarted")) == 2)
        session = rec.on("hermes/dialogueManager/sessionStarted")[1]["sessionId"]
        pipeline.events.publish(TranscriptReady(7, None, "turn on the light", "voice"))
        (heard,) = await rec.wait_for(lambda: rec.on("hermes/asr/textCaptured"))
        assert heard == {"text": "turn on the light", "likelihood": 1.0, "seconds": 0.0,
                         "siteId": "default", "sessionId": session}  # fmt: skip
        await rec.publish("hermes/dialogueManager/endSession", {"sessionId": session, "text": "Done."})
        await rec.wait_for(lambda: len(rec.on("hermes/dialogueManager/sessionEnded")) == 2)
    assert not [m for m in rec.on("hermes/tts/sayFinished") if m["id"] == "h2"]


async def _not_loopback(host: str) -> bool:
    return False


async def test_doctor_warns_about_an_anonymous_broker_off_the_loopback(
    broker: Broker, tmp_path: Path
) -> None:
    config = replace(Config(), mqtt=mqtt_config(broker))
    assert [f.level for f in await check_mqtt(config)] == ["ok"]  # on loopback: fine
    (finding,) = await check_mqtt(config, loopback=_not_loopback)
    assert finding.level == "warn" and "anonymous" in finding.message
    closed = (
        Broker(tmp_path / "auth", users={"assistant": "pw"}) if (tmp_path / "auth").mkdir() is None else None
    )
    assert closed is not None
    closed.start()
    try:
        secured = replace(config, mqtt=mqtt_config(closed, username="assistant", password="pw"))
        findings = await check_mqtt(secured, loopback=_not_loopback)
        assert [f.level for f in findings] == ["ok", "warn"] and "unencrypted" in findings[1].message
    finally:
        closed.kill()
    assert [f.level for f in await check_mqtt(Config())] == ["ok"]  # MQTT off

    async def broken(_: Config) -> list[Finding]:
        raise RuntimeError("boom")

    (failed,) = await asyncio.wait_for(run_checks(Config(), {"broken": broken}), 5)
    assert failed.level == "fail" and failed.check == "broken"
