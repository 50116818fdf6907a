"""Spoken commands end to end on a real broker: the real pipeline on the default models (VAD,
faster-whisper, the intents stage, piper; the LLM a stand-in that must not be asked) in a daemon
whose MQTT bridge is connected to a real Mosquitto. In each of three voices, one stream of every
command (time, date, timer start, status and cancel, the kitchen lights on and off, "stop"); a
subscriber on the broker must receive each command's ``intent`` message, in order, with its
intent and slots, and the lights' payloads on their command topic."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from assistant.audio.sinks import MemorySink
from assistant.audio.sources import AudioSource, PcmSource
from assistant.bench.corpus import CorpusItem, make_stream
from assistant.clock import StreamClock
from assistant.config import Config, IntentsConfig
from assistant.daemon import Daemon
from assistant.engines import Engines, load_engines
from assistant.messages import Message
from assistant.mqtt.bridge import MqttBridge
from assistant.pipeline import Pipeline
from assistant.turn.latency import TurnRecord

from .fakes import FakeChat
from .mosquitto import Broker, Recorder, running_broker
from .spoken_commands import COMMANDS, LIGHTS, STOP, VOICES, spoken_corpus
from .test_mqtt import mqtt_config

pytestmark = pytest.mark.models

SITE = "kitchen"
T = f"assistant/{SITE}"
SPOKEN = (*COMMANDS, (STOP, "HassNevermind", {}))
"""Every command of ``test_intents_voice``, then "stop": (words, intent, slots)."""
PAYLOADS = {"HassTurnOn": "ON", "HassTurnOff": "OFF"}
"""What the kitchen lights' command topic carries after their intent."""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from running_broker(tmp_path_factory.mktemp("broker"))


@pytest.fixture(scope="module")
def voice_engines(model_dir: Path) -> Engines:
    """Whisper and piper, the default models; no LLM (a command never reaches it: a stand-in
    counts the calls)."""
    return load_engines(Config(), model_dir, llm=False)


@pytest.fixture(scope="module")
def spoken(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], CorpusItem]:
    return spoken_corpus(model_dir, tmp_path_factory.mktemp("corpus"))


class AfterConnect:
    """A source that starts once the bridge is connected: what is said before would be lost (the
    bridge drops the events of while it was away)."""

    def __init__(self, source: AudioSource, connected: asyncio.Event) -> None:
        self.source = source
        self.connected = connected

    async def run(self, outbox: asyncio.Queue[Message], clock: StreamClock) -> None:
        await asyncio.wait_for(self.connected.wait(), 10)
        await self.source.run(outbox, clock)


def _config(broker: Broker, tmp_path: Path) -> Config:
    base = Config()
    return replace(
        base,
        input=replace(base.input, realtime=False),
        mqtt=mqtt_config(broker, site=SITE),
        devices=(LIGHTS,),
        intents=IntentsConfig(area="kitchen", timers_file=str(tmp_path / "timers.json")),
    )


@pytest.mark.parametrize("voice", [v.name for v in VOICES])
async def test_spoken_commands_reach_a_subscriber_on_the_broker(
    voice_engines: Engines,
    spoken: dict[tuple[str, str], CorpusItem],
    broker: Broker,
    tmp_path: Path,
    voice: str,
) -> None:
    stream, _ = make_stream([spoken[(text, voice)] for text, _, _ in SPOKEN], gap_ms=1500)
    config = _config(broker, tmp_path)
    records: list[TurnRecord] = []
    chat = FakeChat("This is no command.")
    engines = Engines(voice_engines.asr, chat, voice_engines.tts)
    pipeline = Pipeline(config, engines, MemorySink(), on_turn=records.append)
    bridge = MqttBridge(pipeline, config.mqtt)
    rec = Recorder(broker, [f"{T}/intent", "cmnd/#"])
    async with rec.running():
        source = AfterConnect(PcmSource(stream, config.input), bridge.connected)
        await asyncio.wait_for(Daemon(pipeline, [("mqtt", bridge.run)]).run(source), 240)
        # the bridge has published what was queued by the time the daemon stops; let it arrive
        await rec.wait_for(lambda: len(rec.on(f"{T}/intent")) >= len(SPOKEN), 5)
        await asyncio.sleep(0.3)  # and anything more, which must not be there

    assert chat.calls == [], [r.transcript for r in records]
    by_turn = {r.turn_id: r for r in records}
    intents: list[dict[str, Any]] = rec.on(f"{T}/intent")
    heard = [(m["intent"], m["slots"], m["text"]) for m in intents]
    assert [(intent, slots) for intent, slots, _ in heard] == [(i, s) for _, i, s in SPOKEN], heard
    for message in intents:
        assert set(message) == {"id", "turn", "intent", "slots", "text", "handled_by"}, message
        assert message["id"] is None and message["handled_by"] == "intent", message
        record = by_turn[message["turn"]]
        assert (record.intent, record.handled_by) == (message["intent"], "intent")
        assert message["text"] == record.transcript, (message, record.transcript)
    turns = [m["turn"] for m in intents]
    assert turns == sorted(set(turns))  # one message per turn, in the order spoken

    # the payloads, each right after its intent, and nothing else on a command topic
    seen = []
    for message in rec.messages:
        topic, payload = message.topic.value, message.payload
        text = payload.decode() if isinstance(payload, bytes) else str(payload)
        seen.append(("intent", json.loads(text)["intent"]) if topic == f"{T}/intent" else (topic, text))
    expected = []
    for _, intent, _ in SPOKEN:
        expected.append(("intent", intent))
        if intent in PAYLOADS:
            expected.append((LIGHTS.command_topic, PAYLOADS[intent]))
    assert seen == expected
    assert not [m for m in rec.messages if m.retain]
    print(f"{voice}: {heard}")
