"""The MQTT bridge against a real mosquitto (random loopback port), with fake engines for speed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from assistant.audio.sinks import MemorySink
from assistant.audio.sources import IdleSource
from assistant.config import Config, MqttConfig
from assistant.daemon import Daemon
from assistant.mqtt.bridge import MqttBridge
from assistant.mqtt.protocol import config_from_url, parse_command
from assistant.pipeline import Engines, Pipeline

from .fakes import FakeChat, FakeSynth, FakeTranscriber
from .mosquitto import Broker, Recorder, running_broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running_broker(tmp_path)


T = "assistant/default"


def mqtt_config(b: Broker, **kw: Any) -> MqttConfig:
    base = dict(enabled=True, host=b.host, port=b.port, reconnect_min_s=0.05, reconnect_max_s=0.4)
    return MqttConfig(**(base | {"rate_limit": 1000.0, "rate_burst": 1000} | kw))


@contextlib.asynccontextmanager
async def daemon(
    cfg: MqttConfig, chat: FakeChat | None = None, *, wait: bool = True
) -> AsyncIterator[tuple[Pipeline, MqttBridge]]:
    """A pipeline with fake engines on an idle source, and its bridge; stopped on exit."""
    config = replace(Config(), input=replace(Config().input, realtime=False), mqtt=cfg)
    engines = Engines(FakeTranscriber([]), chat or FakeChat(), FakeSynth())
    pipeline = Pipeline(config, engines, MemorySink(), barge_in=True)
    bridge = MqttBridge(pipeline, cfg)
    source = IdleSource()
    task = asyncio.create_task(Daemon(pipeline, [("mqtt", bridge.run)]).run(source), name="daemon")
    try:
        while not pipeline._inboxes:
            await asyncio.sleep(0.01)
        if wait:
            await asyncio.wait_for(bridge.connected.wait(), 10)
        yield pipeline, bridge
    finally:
        source.stop()
        await asyncio.wait_for(task, 10)


async def finished(rec: Recorder, rid: str) -> dict[str, Any]:
    value: dict[str, Any] = await rec.wait_for(lambda: [m for m in rec.on(f"{T}/latency") if m["id"] == rid])
    return value


async def test_ask_streams_reply_chunks_then_the_final_reply_with_the_id(broker: Broker) -> None:
    chat = FakeChat("Paris is the capital, and it is lovely in spring.")
    rec = Recorder(broker, [f"{T}/#"])
    async with rec.running(), daemon(mqtt_config(broker), chat):
        await rec.wait_for(lambda: rec.on(f"{T}/availability") == ["online"])
        await rec.publish(f"{T}/ask", {"text": "capital of France?", "id": "q1"})
        (done,) = await finished(rec, "q1")
    replies = [m for m in rec.on(f"{T}/reply") if m["id"] == "q1"]
    assert [r["final"] for r in replies] == [False, False, True]
    assert [r["index"] for r in replies[:2]] == [0, 1]
    assert replies[0]["text"] == "Paris is the capital," and replies[0]["turn"] == done["turn"]
    assert replies[-1]["text"] == "Paris is the capital, and it is lovely in spring."
    assert rec.on(f"{T}/transcript") == [{"id": "q1", "turn": done["turn"], "text": "capital of France?",
                                          "source": "text"}]  # fmt: skip
    assert done["kind"] == "ask" and done["outcome"] == "answered"
    assert {"id": "q1", "command": "ask", "turns": [done["turn"]]} in rec.on(f"{T}/ack")
    states = [s["state"] for s in rec.on(f"{T}/state")]
    assert states[0] == "idle" and "thinking" in states and "speaking" in states and states[-1] == "idle"
    assert rec.on(f"{T}/availability")[-1] == "offline"  # published on stop
    assert chat.calls[0][-1] == {"role": "user", "content": "capital of France?"}


async def test_say_speaks_and_finishes_cancel_stops_a_long_reply(broker: Broker) -> None:
    chat = FakeChat(" ".join(["word"] * 200) + ".", delay=0.02)
    rec = Recorder(broker, [f"{T}/#"])
    async with rec.running(), daemon(mqtt_config(broker), chat) as (pipeline, _):
        await rec.publish(f"{T}/say", {"text": "Hello there. How are you?", "id": "s1"})
        (said,) = await finished(rec, "s1")
        assert said["kind"] == "say" and said["outcome"] == "answered"
        assert isinstance(pipeline.sink, MemorySink) and len(pipeline.sink.turns) == 1
        assert not chat.calls  # say never reaches the LLM
        await rec.publish(f"{T}/ask", {"text": "talk a lot", "id": "long"})
        await rec.wait_for(lambda: [m for m in rec.on(f"{T}/reply") if m["id"] == "long"])
        await rec.publish(f"{T}/cancel", {"id": "c1"})
        (cancelled,) = await finished(rec, "long")
        assert cancelled["outcome"] == "cancelled"
        assert await rec.wait_for(lambda: chat.stopped.is_set())
        assert len(chat.emitted) < 200
        chat.reply, chat.delay = "Fine.", 0.0
        await rec.publish(f"{T}/ask", {"text": "again", "id": "q2"})
        (again,) = await finished(rec, "q2")
        assert again["outcome"] == "answered"
    assert [a["turns"] for a in rec.on(f"{T}/ack") if a["id"] == "c1"] == [[cancelled["turn"]]]


async def test_mute_unmute_and_listen(broker: Broker) -> None:
    rec = Recorder(broker, [f"{T}/state", f"{T}/ack"])
    async with rec.running(), daemon(mqtt_config(broker)) as (pipeline, _):
        await rec.publish(f"{T}/mute", "")
        await rec.wait_for(lambda: pipeline.muted)
        await rec.wait_for(lambda: {"state": "idle", "muted": True} in rec.on(f"{T}/state"))
        await rec.publish(f"{T}/listen", {"id": "l1"})
        await rec.wait_for(lambda: not pipeline.muted and pipeline.controller._listen_once)
        await rec.publish(f"{T}/mute", {"muted": True})
        await rec.wait_for(lambda: pipeline.muted)
        await rec.publish(f"{T}/unmute", "{}")
        await rec.wait_for(lambda: not pipeline.muted)
        await rec.wait_for(lambda: len(rec.on(f"{T}/ack")) == 4)


BAD = [
    ("ask", b"", "bad_payload"),
    ("ask", b"\xff\xfe\xfd", "bad_payload"),
    ("ask", b"{", "bad_payload"),
    ("ask", b"[1, 2]", "bad_payload"),
    ("ask", b'{"text": 5, "id": "t5"}', "bad_payload"),
    ("ask", b'{"text": "hi", "speak": "yes"}', "bad_payload"),
    ("say", b'{"text": "hi", "volume": 11}', "bad_payload"),
    ("cancel", b'{"turn": true}', "bad_payload"),
    ("ask", b'{"text": "   "}', "bad_payload"),
    ("command", b'{"command": "reboot", "id": "r1"}', "bad_command"),
    ("command", b"{}", "bad_command"),
    ("ask", json.dumps({"text": "x" * 3000}).encode(), "too_long"),
    ("ask", b"{" + b" " * (1 << 20) + b"}", "too_long"),
    ("ask", b"[" * 60_000 + b"]" * 60_000, "bad_payload"),
]


@pytest.mark.parametrize(("name", "payload", "code"), BAD[:4])
def test_parse_command_refuses(name: str, payload: bytes, code: str) -> None:
    from assistant.mqtt.protocol import CommandError

    with pytest.raises(CommandError) as err:
        parse_command(name, payload, MqttConfig())
    assert err.value.code == code


async def test_each_bad_payload_gets_one_coded_error_and_the_next_command_runs(broker: Broker) -> None:
    chat = FakeChat("Yes.")
    rec = Recorder(broker, [f"{T}/error", f"{T}/latency"])
    async with rec.running(), daemon(mqtt_config(broker, max_payload_bytes=1 << 20), chat) as (_, bridge):
        for name, payload, _ in BAD:
            await rec.publish(f"{T}/{name}", payload)
        errors = await rec.wait_for(lambda: len(rec.on(f"{T}/error")) >= len(BAD) and rec.on(f"{T}/error"))
        await rec.publish(f"{T}/ask", {"text": "still there?", "id": "ok"})
        (done,) = await finished(rec, "ok")
    assert [e["code"] for e in errors] == [code for _, _, code in BAD]
    assert len(rec.on(f"{T}/error")) == len(BAD)
    assert errors[4]["id"] == "t5" and errors[9]["id"] == "r1" and "not UTF-8" in errors[1]["message"]
    assert done["outcome"] == "answered" and len(chat.calls) == 1
    assert bridge.stats["connects"] == 1


async def test_retained_and_duplicate_commands_run_once_or_never(broker: Broker) -> None:
    chat = FakeChat("Ok.")
    rec = Recorder(broker, [f"{T}/error", f"{T}/latency"])
    async with rec.running():
        await rec.publish(f"{T}/ask", {"text": "stale", "id": "old"}, retain=True)
        async with daemon(mqtt_config(broker), chat):
            await rec.wait_for(lambda: [e for e in rec.on(f"{T}/error") if e["code"] == "retained"])
            for _ in range(3):
                await rec.publish(f"{T}/ask", {"text": "once", "id": "dup"})
            await finished(rec, "dup")
            await rec.wait_for(
                lambda: len([e for e in rec.on(f"{T}/error") if e["code"] == "duplicate"]) == 2
            )
        await rec.publish(f"{T}/ask", b"", retain=True)  # clear it
    assert [c[-1]["content"] for c in chat.calls] == ["once"]
    assert not [m for m in rec.on(f"{T}/latency") if m["id"] == "old"]


async def test_a_flood_is_bounded_and_the_excess_refused_as_busy(broker: Broker) -> None:
    chat = FakeChat("Ok.")
    cfg = mqtt_config(broker, rate_limit=50.0, rate_burst=20, inbound_queue=8)
    rec = Recorder(broker, [f"{T}/error"])
    async with rec.running(), daemon(cfg, chat) as (pipeline, bridge):
        start = time.monotonic()
        assert rec.client is not None
        for i in range(10_000):
            await rec.client.publish(f"{T}/ask", json.dumps({"text": f"q{i}", "id": f"f{i}"}), qos=0)
        await rec.wait_for(lambda: bridge.stats["received"] >= 10_000, 30)
        elapsed = time.monotonic() - start
        accepted, busy = bridge.stats["accepted"], bridge.stats["busy"]
        assert accepted + busy == 10_000
        assert accepted <= 20 + 50 * elapsed + 1
        assert busy >= 10_000 - (20 + 50 * elapsed + 1)
        assert bridge._inbound.qsize() <= 8 and bridge._outbox.qsize() <= 1000
        assert pipeline.events.dropped == 0 or pipeline.events.dropped < 10_000
        await asyncio.sleep(0.1)
        await rec.publish(f"{T}/ask", {"text": "after the flood", "id": "after"})
        await rec.wait_for(lambda: chat.calls and chat.calls[-1][-1]["content"] == "after the flood")
    busy_errors = [e for e in rec.on(f"{T}/error") if e["code"] == "busy"]
    assert 0 < len(busy_errors) <= busy


async def test_broker_restart_reconnects_resubscribes_and_republishes(broker: Broker) -> None:
    chat = FakeChat("Here.")
    cfg = mqtt_config(broker)
    async with daemon(cfg, chat) as (pipeline, bridge):
        broker.kill()
        await asyncio.wait_for(_until(lambda: bridge.state == "disconnected"), 5)
        # The voice path keeps running without the broker: a turn goes through, the loop is free.
        turn = await pipeline.ask("while the broker is away", "local")
        await asyncio.wait_for(_until(lambda: not pipeline.tracker.is_open(turn)), 5)
        assert pipeline.tracker.finished[-1].outcome == "answered"
        broker.start()  # no persistence: whatever is retained now was published again
        await asyncio.wait_for(_until(lambda: bridge.stats["connects"] == 2), 10)
        rec = Recorder(broker, [f"{T}/#", "homeassistant/#"])
        async with rec.running():
            await rec.wait_for(lambda: rec.on(f"{T}/availability") == ["online"])
            configs = await rec.wait_for(
                lambda: len(rec.on("homeassistant/text/assistant_default/ask/config"))
            )
            assert configs == 1 and rec.on(f"{T}/state")
            await rec.publish(f"{T}/ask", {"text": "back?", "id": "back"})  # resubscribed
            (done,) = await finished(rec, "back")
            assert done["outcome"] == "answered"
            before = len(rec.on("homeassistant/switch/assistant_default/mute/config"))
            await rec.publish("homeassistant/status", "online")
            await rec.wait_for(
                lambda: len(rec.on("homeassistant/switch/assistant_default/mute/config")) > before
            )


async def test_broker_absent_at_start_then_appears(tmp_path: Path) -> None:
    b = Broker(tmp_path)
    chat = FakeChat("Still here.")
    try:
        async with daemon(mqtt_config(b), chat, wait=False) as (pipeline, bridge):
            await asyncio.sleep(0.3)
            assert bridge.state in ("disconnected", "connecting") and bridge.stats["attempts"] >= 2
            turn = await pipeline.ask("no broker", "local")
            await asyncio.wait_for(_until(lambda: not pipeline.tracker.is_open(turn)), 5)
            b.start()
            await asyncio.wait_for(bridge.connected.wait(), 10)
            rec = Recorder(b, [f"{T}/latency"])
            async with rec.running():
                await rec.publish(f"{T}/ask", {"text": "now?", "id": "now"})
                await finished(rec, "now")
    finally:
        b.kill()


ACL = """user assistant
topic readwrite assistant/#
topic readwrite homeassistant/#
topic readwrite hermes/#

user tester
topic readwrite #
"""


async def test_password_and_acl_broker_right_and_wrong_credentials(tmp_path: Path) -> None:
    b = Broker(tmp_path, users={"assistant": "s3cret", "tester": "t3st"}, acl=ACL)
    b.start()
    try:
        rec = Recorder(b, [f"{T}/latency"], username="tester", password="t3st")
        async with rec.running(), daemon(mqtt_config(b, username="assistant", password="s3cret")):
            await rec.publish(f"{T}/ask", {"text": "hi", "id": "a1"})
            await finished(rec, "a1")
        bad = mqtt_config(b, username="assistant", password="wrong", auth_retry_s=30.0)
        async with daemon(bad, wait=False) as (_, bridge):
            await asyncio.wait_for(_until(lambda: bridge.state == "auth_failed"), 5)
            await asyncio.sleep(1.0)
            assert bridge.stats["attempts"] == 1 and bridge.stats["auth_failed"] == 1  # no tight loop
    finally:
        b.kill()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_tls_trusted_ca_connects_untrusted_is_auth_failed(tmp_path: Path) -> None:
    """(paho leaks the socket of a failed TLS handshake; collected here, so the warning is ours.)"""
    b = Broker(tmp_path, tls=True)
    b.start()
    try:
        async with daemon(mqtt_config(b, tls=True, tls_ca_file=str(b.ca))) as (_, bridge):
            assert bridge.state == "connected"
        async with daemon(mqtt_config(b, tls=True, auth_retry_s=30.0), wait=False) as (_, bridge):
            await asyncio.wait_for(_until(lambda: bridge.state == "auth_failed"), 5)
            await asyncio.sleep(0.5)
            assert bridge.stats["attempts"] == 1
    finally:
        b.kill()
        gc.collect()


def test_config_from_url() -> None:
    cfg = config_from_url("mqtts://me:p%40ss@broker.lan", MqttConfig())
    assert (cfg.enabled, cfg.tls, cfg.host, cfg.port, cfg.username, cfg.password) == (
        True, True, "broker.lan", 8883, "me", "p@ss")  # fmt: skip
    assert config_from_url("mqtt://127.0.0.1:1999", MqttConfig()).port == 1999
    from assistant.errors import ConfigError

    for bad in ("http://x", "mqtt://", "mqtt://h:99999", "mqtt://h/path"):
        with pytest.raises(ConfigError):
            config_from_url(bad, MqttConfig())
    with pytest.raises(ConfigError, match="mqtt.site"):
        MqttConfig(site="a/b")


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.02)
