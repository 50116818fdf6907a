"""The wake word on the virtual devices: ``assistant run --wake okay_nabu`` as a service runs it,
the microphone and speaker PulseAudio's null sinks, its events on a real broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.bench.corpus import Voice, build_corpus

from .conftest import SPEECH_RATE, write_wav
from .mosquitto import Broker, Recorder, running_broker
from .pulse import PulseServer, pulse_fixture  # noqa: F401 - the fixture
from .test_audio_pulse import Recorder as SpeakerRecorder
from .test_audio_pulse import loud, until
from .test_bargein import heard_share

pytest.importorskip("pymicro_wakeword")

T = "assistant/default"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    (tmp_path / "broker").mkdir()
    yield from running_broker(tmp_path / "broker")


@pytest.mark.models
async def test_run_wake_on_the_virtual_devices(
    pulse: PulseServer, broker: Broker, tmp_path: Path, model_dir: Path, engines: Any
) -> None:
    voice = Voice("en-us", "espeak", "en-us", 150, 50)
    texts = ("What is the capital of France?", "Okay nabu, what time is it?")
    items = build_corpus(model_dir, questions=texts, voices=[voice], snr_db=None, cache_dir=tmp_path)
    gap = np.zeros(2 * SPEECH_RATE, dtype=np.int16)
    said = [np.frombuffer(item.pcm, dtype="<i2") for item in items]
    wav = write_wav(tmp_path / "said.wav", np.concatenate([said[0], gap, said[1], gap]), SPEECH_RATE)
    report = tmp_path / "turns.jsonl"
    speaker = SpeakerRecorder(pulse)
    await speaker.flowing()
    mqtt = Recorder(broker, [f"{T}/#"])
    async with mqtt.running():
        daemon = subprocess.Popen(  # noqa: ASYNC220 - a daemon, not awaited on the loop
            [sys.executable, "-m", "assistant", "--model-dir", str(model_dir), "-v", "run",
             "--wake", "okay_nabu", "--input", "pulse:mic.monitor", "--output", "pulse:spk",
             "--report", str(report), "--mqtt", f"mqtt://{broker.host}:{broker.port}"],
            env=os.environ, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            await mqtt.wait_for(lambda: "online" in mqtt.on(f"{T}/availability"), 120)
            await asyncio.sleep(1.0)  # the microphone stream starts
            await asyncio.to_thread(pulse.play(wav).wait, 30)
            await until(lambda: report.exists() and report.read_text().strip() != "", 60)
            await asyncio.sleep(1.0)  # anything more would have come by now
            daemon.send_signal(signal.SIGTERM)
            _, err = await asyncio.to_thread(daemon.communicate, timeout=30)
            assert daemon.returncode == 0, err.decode()[-3000:]
        finally:
            if daemon.poll() is None:
                daemon.kill()
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert [line["transcript"] for line in lines] == ["What time is it?"], lines
    assert lines[0]["intent"] == "HassGetCurrentTime"
    [wake] = mqtt.on(f"{T}/wake")
    assert wake["model"] == "okay_nabu" and wake["wake_word"] == "Okay Nabu"
    assert [t["text"] for t in mqtt.on(f"{T}/transcript")] == ["What time is it?"]  # the question only
    # listening from the wake word on (published again when the question's speech starts)
    states = [s["state"] for s in mqtt.on(f"{T}/state")]
    changes = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    assert changes == ["idle", "listening", "thinking", "speaking", "idle"], states
    topics = [m.topic.value for m in mqtt.messages]
    first_listening = next(
        i for i, m in enumerate(mqtt.messages) if m.topic.value == f"{T}/state" and b"listening" in m.payload
    )
    assert topics.index(f"{T}/wake") < first_listening
    samples, _ = speaker.stop()
    heard = loud(samples, 500)
    assert heard.size, "nothing was played on the speaker"
    reply = engines.asr.transcribe(samples[max(0, heard[0] - 1600) : heard[-1] + 1600].tobytes()).text
    said = lines[0]["reply"]  # "It's 6:01 in the morning.": Whisper has heard "It 601 in the morning."
    assert said.lower().startswith(("it's", "it is")) and heard_share(said, reply) >= 0.7, (said, reply)
