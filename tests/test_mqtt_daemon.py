"""The daemon end to end over MQTT with the real models: a spoken question's events, and
``assistant run --mqtt`` as a process (SIGTERM: retained ``offline``, exit 0; SIGKILL: the will)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.audio.sinks import MemorySink
from assistant.audio.sources import PcmSource
from assistant.config import Config
from assistant.daemon import Daemon
from assistant.mqtt.bridge import MqttBridge

from .mosquitto import Broker, Recorder, running_broker
from .test_mqtt import mqtt_config

T = "assistant/default"
pytestmark = pytest.mark.models


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running_broker(tmp_path)


async def test_a_spoken_question_publishes_states_transcript_reply_and_latency(
    broker: Broker, engines: Any, speak: Callable[[str], np.ndarray]
) -> None:
    silence = np.zeros(8000, dtype=np.int16)
    pcm = np.concatenate([silence, speak("What is the capital of France?"), silence]).tobytes()
    config = replace(Config(), input=replace(Config().input, realtime=False), mqtt=mqtt_config(broker))
    from assistant.pipeline import Pipeline

    pipeline = Pipeline(config, engines, MemorySink())
    bridge = MqttBridge(pipeline, config.mqtt)
    rec = Recorder(broker, [f"{T}/#"])
    async with rec.running():

        async def connected_then(source: PcmSource) -> None:
            await Daemon(pipeline, [("mqtt", bridge.run)]).run(source)

        await asyncio.wait_for(connected_then(PcmSource(pcm, config.input)), 120)
        (done,) = await rec.wait_for(lambda: rec.on(f"{T}/latency"))
    states = [s["state"] for s in rec.on(f"{T}/state")]
    # unpaced input: the endpoint is marked before the speech's start, so listening may not be
    # published at all; never after thinking
    assert {"thinking", "speaking"} <= set(states) and states[-1] == "idle", states
    assert "listening" not in states or states.index("listening") < states.index("thinking"), states
    (heard,) = rec.on(f"{T}/transcript")
    assert heard["source"] == "voice" and "capital" in heard["text"].lower() and heard["id"] is None
    final = [r for r in rec.on(f"{T}/reply") if r["final"]]
    assert len(final) == 1 and "paris" in final[0]["text"].lower()
    assert done["kind"] == "voice" and done["outcome"] == "answered" and "e2e" in done["spans_ms"]
    assert rec.on(f"{T}/availability")[-1] == "offline"


async def test_sigterm_publishes_offline_and_exits_0_sigkill_leaves_the_will(
    broker: Broker, model_dir: Path
) -> None:
    rec = Recorder(broker, [f"{T}/availability"])
    command = ["-m", "assistant", "-v", "--model-dir", str(model_dir), "run", "--mqtt", broker.url()]

    def availability(seen: int) -> list[str]:
        return rec.on(f"{T}/availability")[seen:]

    async with rec.running():
        for sig in (signal.SIGTERM, signal.SIGKILL):
            seen = len(availability(0))
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            try:
                await rec.wait_for(lambda s=seen: availability(s) == ["online"], 90)
                proc.send_signal(sig)
                try:
                    code: int | None = await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    code = None  # the assertion below shows the daemon's log
            finally:
                if proc.returncode is None:
                    proc.kill()
                stderr = (await proc.communicate())[1].decode(errors="replace")
            assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), stderr[-3000:]
            await rec.wait_for(lambda s=seen: availability(s) == ["online", "offline"], 10)
