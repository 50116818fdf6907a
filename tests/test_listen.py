"""Activation modes, the echo gate, and barge-in."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.audio.reference import PlayedAudio
from assistant.audio.sources import PcmSource
from assistant.config import Config, LatencyConfig, ListenConfig, VadConfig
from assistant.daemon import Daemon
from assistant.endpointing.echo import EchoGate, frame_rms, gate_for
from assistant.endpointing.waveform import loudest_10ms
from assistant.messages import AudioIn, Message, SpeechStarted
from assistant.pipeline import Engines, Pipeline
from assistant.stages.vad import VadStage
from assistant.turn.activation import Activation
from assistant.turn.latency import TurnRecord
from assistant.turn.reports import Report, ReportLog, SpeechBegan, VoiceSuspected

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


def test_echo_gate_compares_with_the_playback_before_the_frame_arrived() -> None:
    loud = (np.ones(480) * 8000).astype(np.int16).tobytes()
    played: list[tuple[int, int, float]] = []  # (start_ns, end_ns, rms) heard on the speaker

    def peak(start_ns: int, end_ns: int) -> float:
        return max((rms for s, e, rms in played if s < end_ns and e > start_ns), default=0.0)

    ms = 1_000_000
    gate = EchoGate(peak, margin_db=6.0, hold_ms=300)
    assert not gate.playing(loud, 1000 * ms)  # nothing played: the gate stays out of the way
    played.append((1000 * ms, 1100 * ms, frame_rms(loud)))  # as loud as the frame: its own voice
    played.append((1100 * ms, 1500 * ms, frame_rms(loud) / 4))  # then 12 dB under the user
    assert gate.playing(loud, 1050 * ms) and not gate.allow(loud, strict_voiced=True)
    # classified late, in a burst, the frame is still compared with what played before it came
    assert gate.playing(loud, 1350 * ms) and not gate.allow(loud, strict_voiced=True)
    assert gate.playing(loud, 1450 * ms) and gate.allow(loud, strict_voiced=True)  # 300 ms on
    assert not gate.allow(loud, strict_voiced=False)  # the strict VAD says no
    assert gate.gated == 3
    assert not gate.playing(loud, 1900 * ms)  # more than 300 ms after the playback ended


def test_echo_gate_learns_the_coupling_but_never_from_the_user() -> None:
    def frame(rms: float) -> bytes:
        return (np.ones(480) * rms * 32768).astype(np.int16).tobytes()

    gate = EchoGate(lambda *_: 0.5, margin_db=6.0, learn_min=20, lookback_frames=10, freeze_frames=33)
    user = frame(0.2)  # 12 dB under the playback: dismissed while the coupling is unknown (1.0)
    assert gate.playing(frame(0.05), 0) and gate.coupling == 1.0 and not gate.allow(user, True)
    for _ in range(40):  # the speaker comes back into the mic 20 dB down
        gate.playing(frame(0.05), 0)
    assert gate.coupling == pytest.approx(0.1, rel=0.01)
    assert gate.allow(user, True)  # now 12 dB over the learned echo (0.05): the user's
    for _ in range(30):  # the user goes on talking, over the reply
        gate.playing(user, 0)
        assert gate.allow(user, True)
    for _ in range(30):
        gate.playing(frame(0.05), 0)
    assert gate.coupling == pytest.approx(0.1, rel=0.01)  # the user's frames were never learned


def test_echo_gate_learns_nothing_from_onsets_and_quiet_ends_and_judges_them_safely() -> None:
    """Where the sink's clock places the playback a little late, the microphone hears a reply's
    loud start while its reference still has the soft first milliseconds, and the quiet end of
    a word against an even quieter reference: such frames would teach a coupling several times
    the true one, and the user would then have to shout over the reply."""

    def frame(rms: float) -> bytes:
        return (np.ones(480) * rms * 32768).astype(np.int16).tobytes()

    ms = 1_000_000
    played: list[tuple[int, int, float]] = [(0, 3000 * ms, 0.2)]  # a steady reply, heard 6 dB down

    def peak(start_ns: int, end_ns: int) -> float:
        return max((rms for s, e, rms in played if s < end_ns and e > start_ns), default=0.0)

    gate = EchoGate(peak, learn_min=20)
    for at in range(400, 3000, 30):
        assert gate.playing(frame(0.1), at * ms)
    assert gate.coupling == pytest.approx(0.5, rel=0.01)
    # a gap, then a soft start (20 ms at 0.02) that the microphone, 40 ms ahead, hears loud
    played += [(3600 * ms, 3620 * ms, 0.02), (3620 * ms, 6000 * ms, 0.2)]
    for _ in range(15):
        assert gate.playing(frame(0.1), 3615 * ms)
        assert not gate.allow(frame(0.1), strict_voiced=True)  # judged against the loudest
    # a quiet stretch (0.012 for 400 ms) heard at 2.5 times its level (a breath, the room)
    played += [(6000 * ms, 6400 * ms, 0.012), (6400 * ms, 9000 * ms, 0.2)]
    for at in range(6310, 6400, 5):
        assert gate.playing(frame(0.03), at * ms)
        assert not gate.allow(frame(0.03), strict_voiced=True)  # against 0.2 of the loudest
    for at in range(6700, 7000, 30):
        assert gate.playing(frame(0.1), at * ms)
    assert gate.coupling == pytest.approx(0.5, rel=0.01)  # neither taught it anything
    user = frame(0.25)  # over a steady stretch, 8 dB over the echo: the user's
    assert gate.playing(user, 7000 * ms) and gate.allow(user, strict_voiced=True)


def _noise(rng: np.random.Generator, seconds: float, rms: float) -> np.ndarray:
    """Speech-band noise at a steady level: a stand-in for a voice, one per ``rng``."""
    white = rng.standard_normal(int(seconds * 16000) + 64)
    band = np.convolve(white, np.hanning(8), mode="same")[:-64]  # low-passed, as a voice is
    return band * (rms * 32768 / np.sqrt(np.mean(band**2)))


@pytest.mark.parametrize("echo_like", [True, False], ids=["loopback", "unlike-its-playback"])
def test_echo_gate_hears_a_user_as_loud_as_the_echo_by_the_waveform(echo_like: bool) -> None:
    """At 0 dB echo the user's voice over the reply is only 3 dB over the echo, under the level
    margin: only the waveform, unlike the playback's, tells them apart. Where the echo is not
    like its playback either (a reverberant room), the level alone judges."""
    rng = np.random.default_rng(5)
    ms, start = 1_000_000, 10_000_000_000
    reply = _noise(rng, 6.0, 0.2)
    ring = PlayedAudio(keep_ms=8000)
    ring.write(start, reply.astype(np.int16))

    def peak(start_ns: int, end_ns: int) -> float:
        return loudest_10ms(ring.read(start_ns, (end_ns - start_ns) * 16 // ms).tobytes())

    delay = 25 * 16  # the loopback's: the microphone hears each sample 25 ms after it was played
    echo = np.concatenate([np.zeros(delay), reply])[: reply.size] if echo_like else _noise(rng, 6.0, 0.2)
    user = np.zeros(reply.size)
    user[4 * 16000 : 5 * 16000] = _noise(rng, 1.0, 0.2)  # as loud as the reply, from 4 s to 5 s
    mic = (echo + user).astype(np.int16).tobytes()

    def run(gate: EchoGate) -> tuple[int, int]:
        """(echo frames let through, user frames let through)."""
        let = [0, 0]
        for index in range(0, len(mic) // 960):
            frame = mic[index * 960 : (index + 1) * 960]
            at = start + (index + 1) * 30 * ms + 5 * ms  # arrives 5 ms after its last sample
            assert gate.playing(frame, at)
            if gate.allow(frame, strict_voiced=True):
                let[(index + 1) * 30 > 4000 and index * 30 < 5000] += 1  # the user is in it
        return let[0], let[1]

    played = lambda start_ns, count: ring.read(start_ns, count).tobytes()  # noqa: E731
    by_level, by_waveform = EchoGate(peak), EchoGate(peak, played)
    assert run(by_level)[1] == 0, "the level alone lets the user through: not a 0 dB case"
    echo_let, user_let = run(by_waveform)
    assert echo_let == 0
    if echo_like:
        assert by_waveform.waveform is not None and (by_waveform.waveform.floor or 0) > 0.8
        assert by_waveform.waveform.lag_ns == pytest.approx(-30 * ms, abs=ms)  # 25 ms + the 5 ms to arrive
        assert user_let >= 30  # of 34 frames
    else:
        assert by_waveform.waveform is not None and by_waveform.waveform.floor is None
        assert user_let == 0


def test_the_gate_for_a_speaker_that_reports_what_it_played_compares_waveforms_from_its_first_reply() -> None:
    class Speaker:
        def __init__(self) -> None:
            self.asked: list[tuple[int, int]] = []

        def playback_peak(self, start_ns: int, end_ns: int) -> float:
            return 0.0

    class Reporting(Speaker):
        def played(self, start_ns: int, count: int) -> bytes:
            self.asked.append((start_ns, count))
            return bytes(2 * count)

    reporting = Reporting()
    assert gate_for(reporting, 6.0).waveform is not None  # type: ignore[arg-type]
    assert reporting.asked, "the sink was not asked to keep what it plays before the first frame"
    assert gate_for(Speaker(), 6.0).waveform is None  # type: ignore[arg-type]


def test_echo_gate_hears_the_user_at_once_when_the_speaker_has_paused() -> None:
    """The speaker pauses at the user's first syllable: the frames after it hold no echo, but
    the loudest playback of the last ``hold_ms`` still stands over them, and a user quieter than
    the reply was would be dismissed for that long. Where the echo's place in the playback is
    known, the playback there (silence) judges them."""
    rng = np.random.default_rng(7)
    ms, start = 1_000_000, 10_000_000_000
    reply = _noise(rng, 3.0, 0.2)
    reply[2 * 16000 :] = 0  # paused at 2 s
    ring = PlayedAudio(keep_ms=8000)
    ring.write(start, reply.astype(np.int16))

    def peak(start_ns: int, end_ns: int) -> float:
        return loudest_10ms(ring.read(start_ns, (end_ns - start_ns) * 16 // ms).tobytes())

    echo = np.concatenate([np.zeros(400), reply])[: reply.size]
    user = np.zeros(reply.size)
    user[2 * 16000 + 400 :] = _noise(rng, 1.0, 0.1)[: reply.size - 2 * 16000 - 400]  # 6 dB under it
    mic = (echo + user).astype(np.int16).tobytes()
    played = lambda start_ns, count: ring.read(start_ns, count).tobytes()  # noqa: E731
    firsts = []
    for gate in (EchoGate(peak), EchoGate(peak, played)):
        first = None
        for index in range(0, len(mic) // 960):
            frame = mic[index * 960 : (index + 1) * 960]
            at = start + (index + 1) * 30 * ms + 5 * ms
            heard = not gate.playing(frame, at) or gate.allow(frame, strict_voiced=True)
            if heard:  # let through, or the gate is out of the way (nothing played for hold_ms)
                assert index * 30 >= 2000, "an echo frame let through"
                first = index * 30 if first is None else first
        firsts.append(first)
    by_level, by_waveform = firsts
    assert by_level is not None and by_level >= 2250  # only once the hold has passed
    assert by_waveform is not None and by_waveform <= 2100  # the first frames the echo has left


@pytest.mark.parametrize(("echo_db", "barges"), [(None, True), (0.0, False), (-20.0, True)])
def test_own_voice_looped_back_does_not_start_a_turn(
    espeak: Any, tmp_path: Path, echo_db: float | None, barges: bool
) -> None:
    speech = np.concatenate([silence(300), espeak("the capital of France is Paris", tmp_path), silence(900)])
    vad = VadStage(VadConfig(), VoiceLog())
    level = frame_rms(speech.tobytes()) * 2  # the speaker's level while it plays this very speech
    if echo_db is not None:
        vad.echo_gate = EchoGate(lambda *_: level * 10 ** (echo_db / 20))
    out = vad.feed(AudioIn(speech.tobytes(), 0.0)) + vad.finish()
    assert any(isinstance(m, SpeechStarted) for m in out) is barges


def test_echo_classified_late_is_still_matched_with_the_playback_it_came_from(
    espeak: Any, tmp_path: Path
) -> None:
    """The pipeline ran late and classifies ten seconds of microphone audio in one burst, long
    after the reply ended: its echo is still the reply's, by the pieces' arrival stamps."""
    echo = np.concatenate([silence(300), espeak("the capital of France is Paris", tmp_path), silence(600)])
    start_ns = time.monotonic_ns() - 10_000_000_000
    end_ns = start_ns + len(echo) * 1_000_000_000 // 16_000
    level = frame_rms(echo.tobytes()) * 2  # the echo comes back 6 dB under what was played

    def peak(lo_ns: int, hi_ns: int) -> float:
        return level if lo_ns < end_ns and hi_ns > start_ns else 0.0

    vad = VadStage(VadConfig(), VoiceLog())
    vad.echo_gate = EchoGate(peak, learn_min=1_000)  # the coupling stays at its cautious 1.0
    out: list[Message] = []
    for index, piece in enumerate(_frames(echo)):  # 30 ms pieces, stamped when they arrived
        out += vad.feed(AudioIn(piece, index * 30.0, start_ns + (index + 1) * 30_000_000))
    assert not any(isinstance(m, SpeechStarted) for m in out + vad.finish())
    assert vad.echo_gate.gated > 10


class VoiceLog(ReportLog):
    """Records the VAD's reports, and the order of pauses, resumes and started turns in ``events``."""

    def __init__(self, on_voice: Callable[[bool], None] | None = None) -> None:
        super().__init__()
        self.events: list[str] = []
        self.on_voice = on_voice

    def report(self, report: Report) -> None:
        super().report(report)
        if isinstance(report, VoiceSuspected):
            self.events.append("pause" if report.suspect else "resume")
            if self.on_voice is not None:
                self.on_voice(report.suspect)
        elif isinstance(report, SpeechBegan):
            self.events.append("started")


def _voice_events(vad: VadStage, pcm: np.ndarray) -> list[str]:
    """Feed ``pcm`` frame by frame; the order of pause/resume calls and started turns."""
    for frame in _frames(pcm):
        vad.feed(AudioIn(frame, 0.0))
    assert isinstance(vad.channel, VoiceLog)
    return vad.channel.events


def test_speech_over_playback_pauses_the_speaker_before_the_turn_starts(espeak: Any, tmp_path: Path) -> None:
    speech = espeak("stop and tell me the time", tmp_path)
    vad = VadStage(VadConfig(), VoiceLog())
    vad.echo_gate = EchoGate(lambda *_: 0.001)  # a reply plays; the room hears little of it
    events = _voice_events(vad, np.concatenate([silence(300), speech, silence(900)]))
    assert events == ["pause", "started", "resume"]  # the pause came frames before the start
    quiet = VadStage(VadConfig(), VoiceLog())  # nothing playing: nothing to pause
    quiet.echo_gate = EchoGate(lambda *_: 0.0)
    assert _voice_events(quiet, np.concatenate([silence(300), speech, silence(900)])) == ["started"]


def test_speech_past_a_cut_utterance_does_not_pause_the_speaker(espeak: Any, tmp_path: Path) -> None:
    """Cut at ``max_utterance_ms``, the segmenter waits for silence before it listens again: the
    rest of the speech can start no turn, so it must not hold the reply paused."""
    speech = espeak("stop and tell me the time in London and in Paris please", tmp_path)
    vad = VadStage(VadConfig(max_utterance_ms=1000), VoiceLog())
    vad.echo_gate = EchoGate(lambda *_: 0.001)
    events = _voice_events(vad, np.concatenate([silence(300), speech, silence(900)]))
    assert vad.truncated == 1
    assert events == ["pause", "started", "resume"]


def test_the_speaker_stays_paused_while_the_user_talks_over_a_loud_reply(espeak: Any, tmp_path: Path) -> None:
    """Over a loud reply the gate lets only the user's loudest frames through, too few to start
    a turn (here every third frame). Once paused, the speaker stays paused while the plain VAD
    hears a voice, and the turn starts when the gate's hold on the pre-pause playback has
    passed, instead of pausing and resuming at every frame the gate lets through."""
    speech = espeak("stop, stop, and tell me the time in London please", tmp_path)
    frames = _frames(np.concatenate([silence(300), speech, silence(900)]))
    voiced_rms = np.median([frame_rms(f) for f in frames if frame_rms(f) > 0.01])
    frames = [f if i % 3 == 0 else (np.frombuffer(f, "<i2") * 0.15).astype("<i2").tobytes()
              for i, f in enumerate(frames)]  # fmt: skip
    loud = voiced_rms / 3  # the gate's bar, twice this, is under the user's loud frames only
    start_ns = 10**12
    paused: list[int] = []

    def peak(lo_ns: int, hi_ns: int) -> float:  # the reply plays loud until the speaker pauses
        return loud if not paused or lo_ns < paused[0] else 0.0

    at = [0]

    def on_voice(suspect: bool) -> None:
        paused[:] = [at[0]] if suspect else []

    log = VoiceLog(on_voice)
    vad = VadStage(VadConfig(), log)
    vad.echo_gate = EchoGate(peak, learn_min=10**6, hold_ms=300)  # coupling stays 1.0
    events = log.events
    for index, frame in enumerate(frames):
        at[0] = start_ns + (index + 1) * 30_000_000
        vad.feed(AudioIn(frame, index * 30.0, at[0]))
    assert events == ["pause", "started", "resume"]


def test_a_short_noise_over_playback_pauses_then_resumes_the_speaker(espeak: Any, tmp_path: Path) -> None:
    speech = espeak("ah", tmp_path)
    voiced = np.flatnonzero(np.abs(speech) > 3000)
    burst = speech[voiced[0] : voiced[0] + 960]  # one frame of the vowel: too short for a turn
    vad = VadStage(VadConfig(), VoiceLog())
    vad.echo_gate = EchoGate(lambda *_: 0.001)
    assert _voice_events(vad, np.concatenate([silence(300), burst, silence(600)])) == ["pause", "resume"]


def test_echo_gate_learns_nothing_from_a_quiet_playback() -> None:
    def frame(rms: float) -> bytes:
        return (np.ones(480) * rms * 32768).astype(np.int16).tobytes()

    level = [0.5]
    gate = EchoGate(lambda *_: level[0], learn_min=20, lookback_frames=10)
    for _ in range(40):  # the reply comes back 20 dB down
        gate.playing(frame(0.05), 0)
    assert gate.coupling == pytest.approx(0.1, rel=0.01)
    level[0] = 0.005  # a reply's quiet onset, under room noise: no measure of the echo path
    for _ in range(40):
        assert gate.playing(frame(0.004), 0)
    assert gate.coupling == pytest.approx(0.1, rel=0.01)


def test_a_gap_between_words_keeps_the_speaker_paused(espeak: Any, tmp_path: Path) -> None:
    """The user's first syllable, a 90 ms gap, then the words: one pause, not pause-resume-pause."""
    vowel = espeak("ah", tmp_path)
    voiced = np.flatnonzero(np.abs(vowel) > 3000)
    burst = vowel[voiced[0] : voiced[0] + 960]
    speech = espeak("stop and tell me the time", tmp_path)
    vad = VadStage(VadConfig(), VoiceLog())
    vad.echo_gate = EchoGate(lambda *_: 0.001)
    pcm = np.concatenate([silence(300), burst, silence(90), speech, silence(900)])
    assert _voice_events(vad, pcm) == ["pause", "started", "resume"]


class FakeSpeaker:
    """Plays in real time (sleeps for the audio's duration); reports its level; can be interrupted."""

    def __init__(self) -> None:
        self.level = 0.0
        self.interrupts: list[float] = []
        self.played: list[bytes] = []
        self._stop = asyncio.Event()

    def playback_peak(self, start_ns: int, end_ns: int) -> float:
        return self.level

    def interrupt(self) -> None:
        self.interrupts.append(asyncio.get_running_loop().time())
        self._stop.set()

    def pause(self) -> None:
        return None

    def resume(self) -> None:
        return None

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
    await Daemon(pipeline).run(PcmSource(pcm.tobytes(), config.input))
    outcomes = [(r.transcript, r.outcome) for r in records]
    assert outcomes == [("Capital of France?", "cancelled"), ("Tell me the time.", "answered")], outcomes
    assert speaker.interrupts  # playback was cut
    by_id: dict[int, TurnRecord] = {r.turn_id: r for r in records}
    assert "barge_in" in by_id[records[1].turn_id].actions
    assert pipeline.tracker.actions["barge_in"] == 1
