"""Activation modes, the echo gate, and barge-in."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.activation import Activation
from assistant.audio.sources import PcmSource
from assistant.config import Config, LatencyConfig, ListenConfig, VadConfig
from assistant.echo import EchoGate, frame_rms
from assistant.latency import TurnRecord
from assistant.messages import AudioIn, SpeechStarted
from assistant.pipeline import Engines, Pipeline
from assistant.stages.base import Turns
from assistant.stages.vad import VadStage

from .conftest import silence
from .fakes import FakeChat, FakeSynth, FakeTranscriber


def test_wake_phrase_then_follow_ups() -> None:
    act = Activation(ListenConfig(mode="wake", wake_phrases=("hey assistant",), follow_up_s=5))
    assert act.admit("What time is it?", 0.0) is None and act.refused == 1
    assert act.admit("Hey, assistant. What time is it?", 1.0) == "What time is it?"
    assert act.admit("Hey assistant", 2.0) is None  # the question comes next
    assert act.admit("Turn on the lights.", 3.0) == "Turn on the lights."
    act.replied(10.0)
    assert act.admit("And in the kitchen?", 14.0) == "And in the kitchen?"  # a follow-up
    assert act.admit("And in the kitchen?", 16.0) is None  # the window has closed


def test_always_mode_admits_everything() -> None:
    assert Activation(ListenConfig()).admit("anything", 0.0) == "anything"


def _frames(pcm: np.ndarray) -> list[bytes]:
    raw = pcm.tobytes()
    return [raw[i : i + 960] for i in range(0, len(raw) - 959, 960)]


def test_echo_gate_is_pure_level_comparison() -> None:
    loud = (np.ones(480) * 8000).astype(np.int16).tobytes()
    level = [0.0]
    gate = EchoGate(lambda: level[0], margin_db=6.0, hold_frames=3)
    assert not gate.playing()  # nothing played: the gate stays out of the way
    level[0] = frame_rms(loud)  # the echo is as loud as the frame: the assistant's own voice
    assert gate.playing() and not gate.allow(loud, strict_voiced=True)
    level[0] = frame_rms(loud) / 4  # the user is 12 dB over the echo
    for _ in range(3):
        gate.playing()
    assert gate.allow(loud, strict_voiced=True)
    assert not gate.allow(loud, strict_voiced=False)  # the strict VAD says no
    assert gate.gated == 2


def test_echo_gate_learns_the_coupling_but_never_from_the_user() -> None:
    def frame(rms: float) -> bytes:
        return (np.ones(480) * rms * 32768).astype(np.int16).tobytes()

    gate = EchoGate(lambda: 0.5, margin_db=6.0, learn_min=20, lookback_frames=10, freeze_frames=33)
    user = frame(0.2)  # 12 dB under the playback: dismissed while the coupling is unknown (1.0)
    assert gate.playing(frame(0.05)) and gate.coupling == 1.0 and not gate.allow(user, True)
    for _ in range(40):  # the speaker comes back into the mic 20 dB down
        gate.playing(frame(0.05))
    assert gate.coupling == pytest.approx(0.1, rel=0.01)
    assert gate.allow(user, True)  # now 12 dB over the learned echo (0.05): the user's
    for _ in range(30):  # the user goes on talking, over the reply
        gate.playing(user)
        assert gate.allow(user, True)
    for _ in range(30):
        gate.playing(frame(0.05))
    assert gate.coupling == pytest.approx(0.1, rel=0.01)  # the user's frames were never learned


@pytest.mark.parametrize(("echo_db", "barges"), [(None, True), (0.0, False), (-20.0, True)])
def test_own_voice_looped_back_does_not_start_a_turn(
    espeak: Any, tmp_path: Path, echo_db: float | None, barges: bool
) -> None:
    speech = np.concatenate([silence(300), espeak("the capital of France is Paris", tmp_path), silence(900)])
    vad = VadStage(VadConfig(), Turns())
    level = frame_rms(speech.tobytes()) * 2  # the speaker's level while it plays this very speech
    if echo_db is not None:
        vad.echo_gate = EchoGate(lambda: level * 10 ** (echo_db / 20))
    out = vad.feed(AudioIn(speech.tobytes(), 0.0)) + vad.finish()
    assert any(isinstance(m, SpeechStarted) for m in out) is barges


def _voice_events(vad: VadStage, pcm: np.ndarray) -> list[str]:
    """Feed ``pcm`` frame by frame; the order of pause/resume calls and started turns."""
    events: list[str] = []
    vad.on_voice = lambda suspect: events.append("pause" if suspect else "resume")
    vad.on_speech_start = lambda _turn: events.append("started")
    for frame in _frames(pcm):
        vad.feed(AudioIn(frame, 0.0))
    return events


def test_speech_over_playback_pauses_the_speaker_before_the_turn_starts(espeak: Any, tmp_path: Path) -> None:
    speech = espeak("stop and tell me the time", tmp_path)
    vad = VadStage(VadConfig(), Turns())
    vad.echo_gate = EchoGate(lambda: 0.001)  # a reply plays; the room hears little of it
    events = _voice_events(vad, np.concatenate([silence(300), speech, silence(900)]))
    assert events == ["pause", "started", "resume"]  # the pause came frames before the start
    quiet = VadStage(VadConfig(), Turns())  # nothing playing: nothing to pause
    quiet.echo_gate = EchoGate(lambda: 0.0)
    assert _voice_events(quiet, np.concatenate([silence(300), speech, silence(900)])) == ["started"]


def test_a_short_noise_over_playback_pauses_then_resumes_the_speaker(espeak: Any, tmp_path: Path) -> None:
    speech = espeak("ah", tmp_path)
    voiced = np.flatnonzero(np.abs(speech) > 3000)
    burst = speech[voiced[0] : voiced[0] + 960]  # one frame of the vowel: too short for a turn
    vad = VadStage(VadConfig(), Turns())
    vad.echo_gate = EchoGate(lambda: 0.001)
    assert _voice_events(vad, np.concatenate([silence(300), burst, silence(600)])) == ["pause", "resume"]


class FakeSpeaker:
    """Plays in real time (sleeps for the audio's duration); reports its level; can be interrupted."""

    def __init__(self) -> None:
        self.level = 0.0
        self.interrupts: list[float] = []
        self.played: list[bytes] = []
        self._stop = asyncio.Event()

    def playback_level(self) -> float:
        return self.level

    def interrupt(self) -> None:
        self.interrupts.append(asyncio.get_running_loop().time())
        self._stop.set()

    async def write(self, pcm: bytes, sample_rate: int) -> None:
        self._stop.clear()
        self.played.append(pcm)
        self.level = 0.001  # a quiet room: little echo
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), len(pcm) / 2 / sample_rate)
        self.level = 0.0

    async def turn_done(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_barge_in_stops_the_reply_and_answers_the_new_question(espeak: Any, tmp_path: Path) -> None:
    first = espeak("what is the capital of France", tmp_path)
    second = espeak("stop and tell me the time", tmp_path)
    pcm = np.concatenate([silence(300), first, silence(1500), second, silence(1500)])
    base = Config()
    config = replace(
        base, input=replace(base.input, realtime=True, tail_silence_ms=500), latency=LatencyConfig(ack=False)
    )
    chat = FakeChat(" ".join(["Paris is lovely."] * 40), delay=0.005)
    speaker, records = FakeSpeaker(), []
    synth = FakeSynth()
    pipeline = Pipeline(
        config,
        Engines(FakeTranscriber(["Capital of France?", "Tell me the time."]), chat, synth),
        speaker,
        on_turn=records.append,
    )
    await pipeline.run(PcmSource(pcm.tobytes(), config.input))
    outcomes = [(r.transcript, r.outcome) for r in records]
    assert outcomes == [("Capital of France?", "cancelled"), ("Tell me the time.", "answered")], outcomes
    assert speaker.interrupts  # playback was cut
    by_id: dict[int, TurnRecord] = {r.turn_id: r for r in records}
    assert "barge_in" in by_id[records[1].turn_id].actions
    assert pipeline.tracker.actions["barge_in"] == 1
