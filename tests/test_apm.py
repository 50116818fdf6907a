"""WebRTC audio processing: the wrapper on the real pywebrtc-audio, the far end's alignment by the
playback clock, the stage, the fallback where the library does not import, the config checks."""

from __future__ import annotations

import builtins
import logging
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from assistant.audio import processing
from assistant.audio.playback import Playout
from assistant.audio.processing import FRAME, Coupling, Features, Processor
from assistant.audio.reference import CaptureClock, PlayedAudio, sample_index
from assistant.bench.corpus import pink_noise
from assistant.bench.echo import erle_db, room_echo, through_stage
from assistant.config import AudioProcessingConfig, Config, config_from_dict
from assistant.errors import ConfigError
from assistant.messages import SAMPLE_RATE, AudioIn
from assistant.stages.apm import AudioProcessingStage
from assistant.turn.reports import ReportLog

pytest.importorskip("pywebrtc_audio", reason="the aec extra (pywebrtc-audio) is not installed")

NS = 1_000_000_000 // SAMPLE_RATE
"""Nanoseconds per 16 kHz sample."""


def speechlike(seconds: float, seed: int = 1) -> np.ndarray:
    """A deterministic voice-like signal: pink noise in bursts of random syllable lengths (int16)."""
    n = int(seconds * SAMPLE_RATE)
    noise = pink_noise(n, seed)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(800, 4800, size=n // 800 + 1)
    envelope = np.repeat(np.arange(lengths.size) % 2 == 0, lengths)[:n].astype(np.float32)
    return np.clip(noise * envelope * 5000, -32768, 32767).astype(np.int16)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


# -- the far end: filed by the time it is heard --------------------------------------------------


def test_played_audio_is_read_back_by_time_with_silence_around_it() -> None:
    ring = PlayedAudio(keep_ms=1000)
    t0 = 5_000_000_000
    block = np.arange(1, 321, dtype=np.int16)
    ring.write(t0, block)
    assert np.array_equal(ring.read(t0, 320), block)
    # from 10 ms earlier: silence, then the block's first half
    got = ring.read(t0 - 160 * NS, 320)
    assert not got[:160].any() and np.array_equal(got[160:], block[:160])
    assert not ring.read(t0 + 320 * NS, 160).any(), "nothing played after the block"
    # a block 100 ms later: the gap between them is silence
    ring.write(t0 + 2000 * NS, block)
    assert ring.resyncs == 1
    assert not ring.read(t0 + 320 * NS, 1680).any()
    assert np.array_equal(ring.read(t0 + 2000 * NS, 320), block)


def test_played_audio_snaps_a_wobbling_block_to_the_one_before_and_forgets_old_audio() -> None:
    ring = PlayedAudio(keep_ms=100, snap_ms=30)
    t0 = 7_000_000_000
    first = np.full(320, 1000, dtype=np.int16)
    second = np.full(320, 2000, dtype=np.int16)
    ring.write(t0, first)
    ring.write(t0 + 300 * NS, second)  # stamped 20 samples early: it follows the first directly
    assert ring.resyncs == 0
    got = ring.read(t0, 640)
    assert (got[:320] == 1000).all() and (got[320:] == 2000).all()
    for k in range(2, 10):  # 160 ms more: the ring keeps 100 ms
        ring.write(t0 + 320 * k * NS, np.full(320, k, dtype=np.int16))
    assert not ring.read(t0, 640).any(), "older than the ring keeps: silence"
    assert (ring.read(t0 + 320 * 9 * NS, 320) == 9).all()


def test_capture_clock_takes_the_least_delayed_piece_and_follows_drift() -> None:
    clock = CaptureClock(window_ms=1000, step_ms=3.0)
    origin = 10_000_000_000
    rng = np.random.default_rng(0)
    for k in range(1, 200):  # 20 ms pieces arriving 0-15 ms late
        clock.observe(k * 20.0, origin + k * 20_000_000 + int(rng.uniform(0, 15e6)))
    assert clock.origin_ns is not None and abs(clock.origin_ns - origin) < 1_000_000
    assert clock.at(100.0) == clock.origin_ns + 100_000_000
    jumps = clock.jumps
    for k in range(200, 400):  # the device now delivers 10 ms later (a slower device, drift)
        clock.observe(k * 20.0, origin + 10_000_000 + k * 20_000_000 + int(rng.uniform(0, 15e6)))
    assert abs(clock.origin_ns - origin - 10_000_000) < 1_000_000
    assert clock.jumps == jumps + 1


def test_playout_files_what_it_hands_the_device_at_16_khz_by_when_it_is_heard() -> None:
    playout = Playout(22_050)
    playout.played = ring = PlayedAudio()
    tone = (np.sin(np.arange(22_050) * 2 * np.pi * 440 / 22_050) * 8000).astype("<i2")
    playout.add(tone.tobytes())
    delay_ns = 50_000_000
    before = time.monotonic_ns()
    for k in range(25):  # 0.5 s in 20 ms blocks, handed over at once, heard one after the other
        playout.pull(441, delay_ns=delay_ns + k * 20_000_000 - (time.monotonic_ns() - before))
    heard = ring.read(before + delay_ns, SAMPLE_RATE // 2)
    expected = (np.sin(np.arange(SAMPLE_RATE) * 2 * np.pi * 440 / SAMPLE_RATE) * 8000)[: SAMPLE_RATE // 2]
    on = np.flatnonzero(np.abs(heard) > 100)
    assert on.size and on[0] < 160, "heard from (about) the first block's time"
    body = heard[800:-800].astype(np.float64)
    errors = [rms(body - expected[800 - lag : -800 - lag]) for lag in range(0, 160)]
    assert min(errors) < 0.05 * rms(expected), "the same tone, resampled, without gaps"
    # paused: silence is handed out and filed; the queue waits
    playout.paused = True
    start = time.monotonic_ns() + delay_ns
    playout.pull(441, delay_ns=delay_ns)
    assert not ring.read(start + 2 * NS, 300).any()
    # interrupted: the queue and its copy are dropped
    playout.paused = False
    playout.clear()
    start = time.monotonic_ns() + delay_ns
    playout.pull(441, delay_ns=delay_ns)
    assert not ring.read(start + 2 * NS, 300).any()


# -- the wrapper, on the real library -------------------------------------------------------------


def test_echo_cancellation_removes_a_room_echo_of_the_far_end() -> None:
    far = speechlike(6.0)
    echo = room_echo(far.astype(np.float32), delay_ms=40.0)
    mic = np.clip(echo + np.random.default_rng(2).standard_normal(far.size) * 30, -32768, 32767).astype(
        np.int16
    )
    processor = Processor(Features(echo=True, noise="off", gain=False))
    out = np.concatenate(
        [processor.process(mic[i : i + 320], far[i : i + 320]) for i in range(0, far.size - 319, 320)]
    )
    late = slice(far.size // 2, out.size)
    assert erle_db(mic, out, late) > 15.0
    assert processor.frames == out.size // FRAME


def kept_db(out: np.ndarray, user: np.ndarray, span: slice) -> float:
    """The power of ``out`` against the user's alone over ``span``, in dB."""
    power = [float(np.mean(x[span].astype(np.float64) ** 2)) + 1e-9 for x in (out, user)]
    return float(10 * np.log10(power[0] / power[1]))


def test_a_warmed_up_canceller_keeps_the_near_end_where_the_microphone_hears_no_echo() -> None:
    """Fresh, AEC3 takes the echo to be as loud as the far end until its filter converges, which
    it never does without an echo: the user's words 3 s into the first far end are suppressed.
    After the warm-up (a far end over a quiet near end) they pass as spoken."""
    far = speechlike(6.0, seed=4)
    user = np.zeros(far.size, dtype=np.int16)
    user[3 * SAMPLE_RATE : 4 * SAMPLE_RATE] = speechlike(1.0, seed=5)
    span = slice(3 * SAMPLE_RATE, 4 * SAMPLE_RATE)

    def through(processor: Processor) -> np.ndarray:
        return np.concatenate(
            [processor.process(user[i : i + 320], far[i : i + 320]) for i in range(0, far.size - 319, 320)]
        )

    warm = Processor(Features(echo=True, noise="off", gain=False))
    cold = Processor(Features(echo=True, noise="off", gain=False), warm=False)
    warmed, fresh = kept_db(through(warm), user, span), kept_db(through(cold), user, span)
    assert warmed > -6.0, warmed  # (each burst's onset is clipped for a few 10 ms: not 0 dB)
    assert fresh < warmed - 10.0, ("AEC3 no longer suppresses a fresh near end", fresh, warmed)


def test_the_bench_measures_the_near_end_a_canceller_keeps() -> None:
    from assistant.bench.echo import measure_near_end

    kept = measure_near_end(speechlike(5.0, seed=4), speechlike(1.0, seed=5), [3.0])
    assert set(kept) == {"no_echo", "echo_-18dB", "echo_0dB"}
    assert kept["no_echo"]["warm"] > kept["no_echo"]["fresh"] + 0.2, kept
    assert all(0.0 <= row[k] <= 1.0 for row in kept.values() for k in ("warm", "fresh"))


def test_coupling_tells_an_echo_from_a_microphone_that_hears_none() -> None:
    far = speechlike(4.0, seed=6)
    quiet = (np.random.default_rng(3).standard_normal(far.size) * 10).astype(np.int16)
    echo = (room_echo(far.astype(np.float32)) * 10 ** (-18 / 20)).astype(np.int16)
    for near, coupled in ((quiet, False), (echo, True), (np.zeros_like(far), False)):
        coupling = Coupling()
        assert coupling.echo and coupling.coupling_db is None, "echo is assumed until measured"
        for at in range(0, far.size - 319, 320):
            coupling.add(near[at : at + 320], far[at : at + 320])
        assert coupling.echo is coupled, coupling.coupling_db
    silent = Coupling()
    for at in range(0, far.size - 319, 320):
        silent.add(quiet[at : at + 320], np.zeros(320, dtype=np.int16))
    assert silent.coupling_db is None, "windows without a far end measure nothing"


def test_noise_suppression_lowers_steady_noise_and_gain_control_raises_quiet_speech() -> None:
    noise = (pink_noise(3 * SAMPLE_RATE, 4) * 1000).astype(np.int16)
    ns = Processor(Features(echo=False, noise="high", gain=False))
    out = ns.process(noise)
    assert rms(out[SAMPLE_RATE:]) < 0.3 * rms(noise[SAMPLE_RATE:])
    quiet = (speechlike(4.0).astype(np.float32) * 0.02).astype(np.int16)
    agc = Processor(Features(echo=False, noise="off", gain=True, max_gain_db=30.0))
    raised = agc.process(quiet)
    assert agc.gain_db > 3.0
    assert rms(raised[-SAMPLE_RATE:]) > 1.5 * rms(quiet[-SAMPLE_RATE:])


def test_the_processor_takes_only_whole_frames_and_a_far_end_as_long_as_the_near_end() -> None:
    processor = Processor(Features(echo=True, noise="off", gain=False))
    with pytest.raises(ValueError, match="10 ms frames"):
        processor.process(np.zeros(100, dtype=np.int16), np.zeros(100, dtype=np.int16))
    with pytest.raises(ValueError, match="as long"):
        processor.process(np.zeros(160, dtype=np.int16), np.zeros(320, dtype=np.int16))


# -- the stage ------------------------------------------------------------------------------------


def test_file_input_passes_unaltered_by_default_and_is_processed_when_asked() -> None:
    pcm = speechlike(0.2).tobytes()
    stage = AudioProcessingStage(AudioProcessingConfig(), ReportLog(), None)
    piece = AudioIn(pcm, 0.0)  # a file's piece: no arrival time
    assert stage.feed(piece) == [piece]
    assert stage.processor is None, "nothing made for a file"
    stage = AudioProcessingStage(
        AudioProcessingConfig(inputs="all", noise_suppression="low"), ReportLog(), None
    )
    [out] = stage.feed(piece)
    assert out.start_ms == 0.0 and len(out.pcm) == len(pcm) and out.pcm != pcm
    assert stage.processor is not None and not stage.processor.features.echo, "no speaker, no AEC"


def test_pieces_that_split_frames_keep_the_timeline_contiguous() -> None:
    stage = AudioProcessingStage(
        AudioProcessingConfig(inputs="all", noise_suppression="low"), ReportLog(), None
    )
    audio = speechlike(1.0).tobytes()
    size = 2 * SAMPLE_RATE * 25 // 1000  # 25 ms pieces: 2.5 frames each
    out: list[AudioIn] = []
    for at in range(0, len(audio), size):
        out += stage.feed(AudioIn(audio[at : at + size], at / 32, 1_000_000 + at))
    out += stage.flush()
    position = 0.0
    for piece in out:
        assert piece.start_ms == pytest.approx(position)
        position += len(piece.pcm) / 32
    assert sum(len(p.pcm) for p in out) == len(audio)


class Speaker:
    """A live speaker's played audio (``contracts.EchoReference``), from a ring the test fills."""

    def __init__(self) -> None:
        self.ring = PlayedAudio()

    def played(self, start_ns: int, count: int) -> bytes:
        return self.ring.read(start_ns, count).tobytes()


def through_live_stage(far: np.ndarray, mic: np.ndarray, late_ms: int) -> np.ndarray:
    """``mic`` through the stage in 20 ms pieces that arrive late by up to 10 ms; the speaker
    files ``far`` 300 ms before it is heard, by when it is heard, its clock ``late_ms`` late."""
    speaker = Speaker()
    t0 = 3_000_000_000
    config = AudioProcessingConfig(echo_cancellation=True, noise_suppression="off")
    stage = AudioProcessingStage(config, ReportLog(), speaker)
    rng = np.random.default_rng(1)
    out: list[bytes] = []
    filed = 0
    for at in range(0, far.size - 319, 320):
        ahead = min(far.size, at + 320 + 4800)
        if ahead > filed:
            speaker.ring.write(t0 + (filed + late_ms * 16) * NS, far[filed:ahead])
            filed = ahead
        arrived = t0 + (at + 320) * NS + int(rng.uniform(0, 10e6))
        out += [p.pcm for p in stage.feed(AudioIn(mic[at : at + 320].tobytes(), at / 16, arrived))]
    return np.frombuffer(b"".join(out), dtype="<i2")


def test_the_stage_lines_the_far_end_up_by_the_playback_clock() -> None:
    """Aligned by the two clocks, the echo is cancelled; with the speaker's clock 150 ms late
    (the echo then reaches the canceller before its reference) only AEC3's suppressor is left,
    and with it 100 ms early (the canceller finds the longer delay) it is cancelled again."""
    far = speechlike(8.0, seed=9)
    mic = np.clip(room_echo(far.astype(np.float32), delay_ms=20.0), -32768, 32767).astype(np.int16)
    last = slice(far.size - 2 * SAMPLE_RATE, far.size)
    aligned = erle_db(mic, through_live_stage(far, mic, 0), last)
    late = erle_db(mic, through_live_stage(far, mic, 150), last)
    early = erle_db(mic, through_live_stage(far, mic, -100), last)
    assert aligned > 25.0, aligned
    assert late < aligned - 10.0, (late, aligned)
    assert early > 25.0, early


def test_the_stage_passes_the_microphone_as_captured_where_it_hears_no_echo() -> None:
    """The speaker plays, the microphone hears only the user: once the coupling is measured (a
    second of far end), pieces pass as captured; a microphone that hears the speaker gets the
    canceller's output throughout."""
    far = speechlike(5.0, seed=7)
    user = np.zeros(far.size, dtype=np.int16)
    user[3 * SAMPLE_RATE : 4 * SAMPLE_RATE] = speechlike(1.0, seed=8)
    stage_out = through_live_stage(far, user, 0)
    after = slice(2 * SAMPLE_RATE, stage_out.size)
    assert np.array_equal(stage_out[after], user[after])
    mic = np.clip(room_echo(far.astype(np.float32)) + user, -32768, 32767).astype(np.int16)
    assert erle_db(mic, through_live_stage(far, mic, 0), slice(SAMPLE_RATE, 3 * SAMPLE_RATE)) > 15.0


def test_through_stage_measures_no_enhancement_without_echo_cancellation() -> None:
    far = speechlike(3.0)
    mic = room_echo(far.astype(np.float32)).astype(np.int16)
    off = AudioProcessingConfig(inputs="all", echo_cancellation=False, noise_suppression="off")
    out = through_stage(mic, far, replace(off, gain_control=False, noise_suppression="low"))
    assert abs(erle_db(mic, out, slice(SAMPLE_RATE, out.size))) < 6.0


# -- where the library does not install ---------------------------------------------------------


def test_without_pywebrtc_audio_one_warning_names_the_extra_and_audio_passes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_import = builtins.__import__

    def no_webrtc(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("pywebrtc_audio"):
            raise ImportError("No module named 'pywebrtc_audio'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "pywebrtc_audio", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_webrtc)
    with pytest.raises(processing.ProcessingUnavailable):
        processing.webrtc()
    everything = AudioProcessingConfig(
        echo_cancellation=True, noise_suppression="moderate", gain_control=True
    )
    stage = AudioProcessingStage(everything, ReportLog(), Speaker())
    pieces = [AudioIn(speechlike(0.02, seed=k).tobytes(), k * 20.0, 1_000_000 * (k + 1)) for k in range(5)]
    with caplog.at_level(logging.WARNING):
        out = [p for piece in pieces for p in stage.feed(piece)]
    assert out == pieces, "the microphone is heard as it came"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "assistant[aec]" in warnings[0] and "echo cancellation" in warnings[0]
    assert "noise suppression" in warnings[0] and "gain control" in warnings[0]


def test_the_pipeline_builds_without_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    from assistant.audio.sinks import MemorySink
    from assistant.engines import Engines
    from assistant.pipeline import Pipeline

    monkeypatch.setattr(
        processing, "webrtc", lambda: (_ for _ in ()).throw(processing.ProcessingUnavailable("x"))
    )
    echo = AudioProcessingConfig(echo_cancellation=True)
    assert processing.load(echo, echo=True) is None
    pipeline = Pipeline(Config(audio_processing=echo), Engines(), MemorySink())
    assert pipeline._build("apm") is not None  # noqa: SLF001 - made; it passes audio through
    off = Config(audio_processing=AudioProcessingConfig(inputs="none"))
    assert Pipeline(off, Engines(), MemorySink())._build("apm") is None  # noqa: SLF001


# -- config -----------------------------------------------------------------------------------------


def test_config_defaults_and_checks() -> None:
    config = config_from_dict({})
    ap = config.audio_processing
    assert (ap.inputs, ap.echo_cancellation, ap.noise_suppression, ap.gain_control) == (
        "live",
        False,
        "off",
        False,
    )
    table = {
        "audio_processing": {"noise_suppression": "high", "gain_control": False, "reference_margin_ms": 60}
    }
    loaded = config_from_dict(table).audio_processing
    assert (loaded.noise_suppression, loaded.gain_control, loaded.reference_margin_ms) == ("high", False, 60)
    for key, value, words in [
        ("noise_suppression", "max", "audio_processing.noise_suppression"),
        ("inputs", "files", "audio_processing.inputs"),
        ("reference_margin_ms", 1000, "audio_processing.reference_margin_ms"),
        ("max_gain_db", -1.0, "audio_processing.max_gain_db"),
    ]:
        with pytest.raises(ConfigError, match=words):
            config_from_dict({"audio_processing": {key: value}})
    with pytest.raises(ConfigError, match="unknown key audio_processing.aec"):
        config_from_dict({"audio_processing": {"aec": True}})
    assert not AudioProcessingConfig(
        echo_cancellation=False, noise_suppression="off", gain_control=False
    ).active
    assert not AudioProcessingConfig(inputs="none").active


def test_sample_index_is_the_16_khz_slot_of_a_time() -> None:
    assert sample_index(1_000_000_000) == SAMPLE_RATE
    assert sample_index(62_500) == 1


# -- doctor ---------------------------------------------------------------------------------------


async def test_doctor_shows_what_the_processing_does_and_warns_where_it_cannot_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from assistant.audio.sinks import NullSink
    from assistant.audio.sources import IdleSource
    from assistant.doctor import CHECKS, Setup
    from assistant.doctor.processing import check_processing

    assert CHECKS["processing"] is check_processing
    everything = Config(
        audio_processing=AudioProcessingConfig(
            echo_cancellation=True, noise_suppression="moderate", gain_control=True
        )
    )
    live = Setup(
        config=everything,
        input="mic",
        output="speaker",
        open_source=lambda _s: IdleSource(),
        open_sink=lambda _s: NullSink(),
    )
    [ok] = await check_processing(live)
    assert ok.level == "ok", ok
    assert "echo cancellation" in ok.message and "noise suppression (moderate)" in ok.message
    [file_input] = await check_processing(Setup(config=everything, input="q.wav", output="out.wav"))
    assert file_input.level == "ok" and "not a live microphone" in file_input.message
    [off] = await check_processing(
        Setup(config=Config(audio_processing=AudioProcessingConfig(inputs="none")))
    )
    assert off.level == "ok" and "off" in off.message
    [default] = await check_processing(Setup(input="mic", output="speaker"))
    assert default.level == "ok" and "off" in default.message  # nothing is on by default

    def missing() -> Any:
        raise processing.ProcessingUnavailable("pywebrtc-audio cannot be imported (No module named x)")

    monkeypatch.setattr(processing, "webrtc", missing)
    [warn] = await check_processing(live)
    assert warn.level == "warn" and "heard raw" in warn.message and "echo cancellation" in warn.message
    assert "assistant[aec]" in warn.fix and "module-echo-cancel" in warn.fix


def test_the_echo_gate_judges_the_microphone_as_captured_not_as_processed() -> None:
    """The second line never trusts the canceller: the VAD's echo gate learns its coupling from
    ``AudioIn.raw`` (the echo at full level here), not from the processed audio (a tenth of it)."""
    from assistant.config import VadConfig
    from assistant.endpointing.echo import EchoGate
    from assistant.stages.vad import VadStage

    vad = VadStage(VadConfig(), ReportLog())
    vad.echo_gate = gate = EchoGate(lambda _start, _end: 0.2)
    echo = speechlike(3.0, seed=5)
    echo = (echo.astype(np.float32) * (0.2 * 32768 / rms(echo))).astype(np.int16)
    processed = (echo // 10).astype(np.int16)
    for at in range(0, echo.size - 319, 320):
        span = slice(at, at + 320)
        vad.feed(
            AudioIn(processed[span].tobytes(), at / 16, 1_000_000_000 + at * NS, raw=echo[span].tobytes())
        )
    assert gate.coupling > 0.5, "learnt from the raw echo (about 1), not the processed one (0.1)"


def test_what_is_queued_is_filed_ahead_and_what_really_played_overwrites_it() -> None:
    """A loop running late hands blocks over late: the queue after each block is filed as a
    forecast, so the canceller reads the reply it is about to hear; an interrupt's silence,
    handed over later, replaces the forecast."""
    playout = Playout(SAMPLE_RATE)
    playout.played = ring = PlayedAudio()
    reply = np.full(SAMPLE_RATE, 3000, dtype="<i2")  # one second queued
    playout.add(reply.tobytes())
    now = time.monotonic_ns()
    playout.pull(320, delay_ns=0)  # the first 20 ms handed over
    ahead = ring.read(now + 320 * NS + 2 * NS, 4000)  # the next 250 ms: not handed over yet
    assert (ahead == 3000).all(), "the queued reply is filed ahead of the block"
    assert ring.filed_ns >= now + (320 + SAMPLE_RATE * 300 // 1000) * NS - 1_000_000
    playout.clear()  # interrupted: what follows is silence, once handed over
    playout.pull(320, delay_ns=20_000_000 - (time.monotonic_ns() - now))
    assert not ring.read(now + 640 * NS + 2 * NS, 4000).any(), "the forecast past the interrupt is void"
