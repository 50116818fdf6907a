"""Home Assistant MQTT discovery: one device, and an entity for each thing a dashboard needs.

Each entity's config is published retained on
``<discovery_prefix>/<component>/assistant_<site>/<object>/config`` when the bridge connects, and
again whenever Home Assistant announces ``online`` on ``<discovery_prefix>/status``. Entities:

=============  ===============  ===========================================================
component      object           what it does
=============  ===============  ===========================================================
sensor         transcript       the last thing heard or asked (``transcript`` topic)
sensor         latency          end-to-end latency of the last spoken turn, in ms
sensor         state            idle / listening / thinking / speaking
binary_sensor  speaking         on while the assistant speaks
switch         mute             the microphone on/off (publishes to ``mute``)
button         listen           push-to-talk: open the microphone for one turn
button         cancel           stop the reply in progress
notify         say              speak a message as it is (``say``)
text           ask              ask a question; the answer is spoken (``ask``)
event          intent           fires once per local intent matched (``intent`` topic)
event          wake             fires when the wake word model hears its word (``wake`` topic)
event          stop_word        fires when "stop" is said over a reply or an alarm (``stop_word``)
=============  ===============  ===========================================================

The ``intent`` event entity (``event.voice_assistant_intent``) reads the ``intent`` topic through
a value template that makes ``{"event_type": <intent>, <slot>: <value>..., "text", "turn", "id"}``
of each message: an automation triggers on its state with ``event_type: HassTurnOn`` and reads
the slots (``area``, ``name``, ``domain``...) from its attributes. Home Assistant refuses event
types it was not told of, so ``event_types`` lists every intent the built-in handlers answer
(``INTENT_EVENT_TYPES``).

Every entity names the availability topic, so Home Assistant greys it out when the last will
``offline`` arrives. The keys used are the ones documented for each MQTT platform (checked in
``tests/test_mqtt_hass.py``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from assistant import __version__
from assistant.config import MqttConfig

if TYPE_CHECKING:
    from assistant.mqtt.protocol import Outgoing, Topics

_TEXT_TEMPLATE = '{"text": {{ value | tojson }}}'
_INTENT_TEMPLATE = (
    "{{ dict(value_json.slots, event_type=value_json.intent, text=value_json.text,"
    " turn=value_json.turn, id=value_json.id) | tojson }}"
)
"""The ``intent`` payload as Home Assistant's event payload: the slots flattened into the
attributes (ours win over a slot of the same name)."""
_NAMED_TEMPLATE = "{{{{ dict(value_json, event_type={name!r}) | tojson }}}}"
"""A payload as an event of one type (``name``), its keys the attributes."""
INTENT_EVENT_TYPES = (
    "HassTurnOn", "HassTurnOff", "HassStartTimer", "HassCancelTimer", "HassCancelAllTimers",
    "HassTimerStatus", "HassPauseTimer", "HassUnpauseTimer", "HassIncreaseTimer", "HassDecreaseTimer",
    "HassGetCurrentTime", "HassGetCurrentDate", "HassNevermind", "HassSetVolume",
    "HassSetVolumeRelative", "HassMediaPlayerMute", "HassMediaPlayerUnmute",
)  # fmt: skip
"""The intents the built-in handlers answer, as Home Assistant intents name them."""


def device_id(config: MqttConfig) -> str:
    return f"assistant_{config.site}"


def entity_configs(config: MqttConfig, topics: Topics) -> dict[tuple[str, str], dict[str, Any]]:
    """(component, object id) -> the discovery payload of each entity a dashboard shows."""
    state = topics.out("state")
    entities: dict[tuple[str, str], dict[str, Any]] = {
        ("sensor", "transcript"): {
            "name": "Last transcript",
            "state_topic": topics.out("transcript"),
            "value_template": "{{ value_json.text[:255] }}",
            "icon": "mdi:text-to-speech",
        },
        ("sensor", "latency"): {
            "name": "Latency",
            "state_topic": topics.out("latency"),
            "value_template": "{{ value_json.spans_ms.e2e | default('None') }}",
            "unit_of_measurement": "ms",
            "device_class": "duration",
            "state_class": "measurement",
            "json_attributes_topic": topics.out("latency"),
        },
        ("sensor", "state"): {
            "name": "State",
            "state_topic": state,
            "value_template": "{{ value_json.state }}",
            "icon": "mdi:account-voice",
        },
        ("binary_sensor", "speaking"): {
            "name": "Speaking",
            "state_topic": state,
            "value_template": "{{ 'ON' if value_json.state == 'speaking' else 'OFF' }}",
            "device_class": "sound",
        },
        ("switch", "mute"): {
            "name": "Mute",
            "command_topic": topics.out("mute"),
            "payload_on": '{"muted": true}',
            "payload_off": '{"muted": false}',
            "state_topic": state,
            "value_template": "{{ 'ON' if value_json.muted else 'OFF' }}",
            "state_on": "ON",
            "state_off": "OFF",
            "icon": "mdi:microphone-off",
        },
        ("button", "listen"): {
            "name": "Listen",
            "command_topic": topics.out("listen"),
            "payload_press": "{}",
            "icon": "mdi:microphone",
        },
        ("button", "cancel"): {
            "name": "Cancel",
            "command_topic": topics.out("cancel"),
            "payload_press": "{}",
            "icon": "mdi:stop",
        },
        ("notify", "say"): {
            "name": "Say",
            "command_topic": topics.out("say"),
            "command_template": _TEXT_TEMPLATE,
        },
        ("text", "ask"): {
            "name": "Ask",
            "command_topic": topics.out("ask"),
            "command_template": _TEXT_TEMPLATE,
            "max": min(255, config.max_text_chars),
            "mode": "text",
        },
    }
    return _identify(config, topics, entities)


def event_configs(config: MqttConfig, topics: Topics) -> dict[tuple[str, str], dict[str, Any]]:
    """(component, object id) -> the discovery payload of each event entity (automations' triggers)."""
    entities: dict[tuple[str, str], dict[str, Any]] = {
        ("event", "intent"): {
            "name": "Intent",
            "state_topic": topics.intent,
            "value_template": _INTENT_TEMPLATE,
            "event_types": list(INTENT_EVENT_TYPES),
            "icon": "mdi:home-automation",
        },
        ("event", "wake"): {
            "name": "Wake word",
            "state_topic": topics.out("wake"),
            "value_template": _NAMED_TEMPLATE.format(name="wake"),
            "event_types": ["wake"],
            "icon": "mdi:account-voice",
        },
        ("event", "stop_word"): {
            "name": "Stop word",
            "state_topic": topics.out("stop_word"),
            "value_template": _NAMED_TEMPLATE.format(name="stop_word"),
            "event_types": ["stop_word"],
            "icon": "mdi:stop-circle-outline",
        },
    }
    return _identify(config, topics, entities)


def _identify(
    config: MqttConfig, topics: Topics, entities: dict[tuple[str, str], dict[str, Any]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Each entity gets its unique id, the availability topic, the device and the origin."""
    node = device_id(config)
    device = {
        "identifiers": [node],
        "name": "Voice assistant" if config.site == "default" else f"Voice assistant ({config.site})",
        "manufacturer": "assistant",
        "model": "offline voice assistant",
        "sw_version": __version__,
    }
    for (_, object_id), payload in entities.items():
        payload["unique_id"] = f"{node}_{object_id}"
        payload["availability_topic"] = topics.availability
        payload["device"] = device
        payload["origin"] = {"name": "assistant", "sw_version": __version__}
    return entities


def discovery_messages(config: MqttConfig, topics: Topics) -> list[Outgoing]:
    """The retained discovery messages, one per entity."""
    from assistant.mqtt.protocol import Outgoing

    node = device_id(config)
    return [
        Outgoing(
            f"{config.discovery_prefix}/{component}/{node}/{object_id}/config",
            json.dumps(payload, ensure_ascii=False),
            qos=1,
            retain=True,
        )
        for (component, object_id), payload in (
            entity_configs(config, topics) | event_configs(config, topics)
        ).items()
    ]
