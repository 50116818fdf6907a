"""Echo cancellation on the virtual devices: the reply played on ``spk`` is looped back into the
microphone (``module-loopback``, as loud as it plays: 0 dB echo) and WebRTC's AEC, fed what the
sink played by the playback clock, removes it.

- the echo return loss enhancement of the stage on the loopback (printed);
- a question spoken over the reply at 0 dB echo (the user as loud as the reply) stops playback
  within 200 ms and is answered (real models, the daemon's pipeline, AEC on);
- the reply looped back at 0 dB starts nothing (no barge-in, no turn): with AEC (the default)
  and with the energy gate alone;
- PulseAudio's own ``module-echo-cancel`` (the OS-level alternative) on the same devices.

The question over the reply at 0 dB is heard by its waveform: the energy gate, the second line,
judges the microphone as captured, where the user at 0 dB is only about 3 dB over the echo, under
the gate's margin; the gate also compares each frame with what the speaker played, and the
user's frames are not like it (``endpointing/echo.py``).

A real-time test on a shared 2-core machine: one that fails once may be load; rerun it alone.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.audio.pulse import PulseSink, PulseSource
from assistant.clock import StreamClock
from assistant.config import AudioProcessingConfig, Config
from assistant.messages import EndOfStream, Message
from assistant.stages.apm import AudioProcessingStage
from assistant.turn.reports import ReportLog

from .conftest import SPEECH_RATE, silence, write_wav
from .pulse import PulseServer, pulse_fixture  # noqa: F401 - the fixture
from .test_audio_pulse import Recorder, loud, until
from .test_bargein import (  # noqa: F401 - close_rigs: the fixture
    STOP_BAR_S,
    Rig,
    close_rigs,
    heard_share,
    heard_text,
    opening,
    question_over_reply,
    reply_under_speech,
    talkative,
)

pytest.importorskip("pywebrtc_audio", reason="the aec extra (pywebrtc-audio) is not installed")

REPLY_TEXT = (
    "The history of Rome spans more than two thousand years, from a small village on the Tiber to"
    " an empire around the Mediterranean sea, and its laws and its language shaped all of Europe."
)


def erle(raw: np.ndarray, out: np.ndarray) -> float:
    """Echo return loss enhancement (dB) over the second half of the loud part of ``raw``."""
    on = loud(raw, 1000)
    span = slice(int((on[0] + on[-1]) // 2), int(on[-1]))
    power = [float(np.mean(x[span].astype(np.float64) ** 2)) + 1e-9 for x in (raw, out)]
    return float(10 * np.log10(power[0] / power[1]))


async def test_the_stage_cancels_the_reply_looped_back_at_0_db(
    pulse: PulseServer, tmp_path: Path, espeak: Any
) -> None:
    reply = espeak(REPLY_TEXT, tmp_path).astype(np.float32)
    reply = (reply * (0.5 * 32767 / np.abs(reply).max())).astype(np.int16)
    pulse.loopback("spk.monitor", "mic")
    sink, source = PulseSink("spk"), PulseSource("mic.monitor")
    config = AudioProcessingConfig(echo_cancellation=True, noise_suppression="off")
    stage = AudioProcessingStage(config, ReportLog(), sink)
    queue: asyncio.Queue[Message] = asyncio.Queue(1000)
    raw: list[bytes] = []
    out: list[bytes] = []

    async def consume() -> None:
        while not isinstance(item := await queue.get(), EndOfStream):
            raw.append(item.pcm)  # type: ignore[attr-defined]
            out.extend(p.pcm for p in stage.feed(item))  # type: ignore[arg-type]

    recording = asyncio.create_task(source.run(queue, StreamClock(realtime=True)), name="source")
    consumer = asyncio.create_task(consume(), name="consume")
    await until(lambda: len(raw) > 50, 10)
    await sink.write(reply.tobytes(), SPEECH_RATE)
    await sink.turn_done()
    await asyncio.sleep(0.5)
    source.stop()
    await recording
    await consumer
    await sink.close()
    mic = np.frombuffer(b"".join(raw), dtype="<i2")
    processed = np.frombuffer(b"".join(out), dtype="<i2")[: mic.size]
    enhancement = erle(mic[: processed.size], processed)
    assert loud(mic, 1000).size > SPEECH_RATE, "the microphone did not hear the reply"
    print(f"loopback ERLE (the stage, AEC only, 0 dB echo): {enhancement:.1f} dB")
    assert enhancement > 6.0


def level_db(samples: np.ndarray) -> float:
    """RMS of the loud part, in dBFS."""
    on = samples[np.abs(samples.astype(np.int32)) > 300].astype(np.float64)
    return float(20 * np.log10(np.sqrt(np.mean(on**2)) / 32768)) if on.size else -120.0


def with_aec(config: Config, on: bool = True) -> Config:
    return replace(config, audio_processing=replace(config.audio_processing, echo_cancellation=on))


@pytest.mark.models
async def test_a_question_over_the_reply_at_0_db_echo_stops_it_within_200_ms_and_is_answered(
    pulse: PulseServer, tmp_path: Path, engines: Any, speak: Any
) -> None:
    """The user speaks at the voice's own level, as loud as the reply comes back."""
    first = np.concatenate([speak("Tell me about the history of Rome."), silence(300)])
    second = np.concatenate([speak("What is the capital of France?"), silence(300)])
    pulse.loopback("spk.monitor", "mic")  # 100 %: the microphone hears the reply as loud as it plays
    rig = Rig(pulse, engines, with_aec(talkative(Config())))
    mic, mic_t, spk, spk_t, asked = await question_over_reply(rig, tmp_path, first, second)
    apm = rig.pipeline._apm  # noqa: SLF001 - what ran
    assert apm is not None and apm.processor is not None and apm.processor.features.echo

    spoken_at, spoken_s, during = reply_under_speech(mic, mic_t, spk, spk_t, second, asked)
    reply_db = level_db(spk[(spk_t > spoken_at - 1.5) & (spk_t < spoken_at - 0.1)])
    user_db = level_db(second)
    print(f"echo {reply_db:.1f} dBFS, the user {user_db:.1f} dBFS: the user {user_db - reply_db:+.1f} dB")
    assert abs(user_db - reply_db) < 4.0, "not a 0 dB echo"
    gate = rig.pipeline._vad.echo_gate if rig.pipeline._vad else None  # noqa: SLF001 - diagnosis
    assert gate is not None and gate.waveform is not None, "the sink reports what it played"
    print(f"echo gate: coupling {gate.coupling:.3f}, floor {gate.waveform.floor}, unlike {gate.unlike}")
    stop_s = spk_t[during[-1]] - spoken_at
    print(f"barge-in at 0 dB echo: speech onset in the mic feed -> reply silent: {stop_s * 1000:.0f} ms")
    assert stop_s < STOP_BAR_S

    after = spk[spk_t > spoken_at + spoken_s - 0.3]
    text = heard_text(engines, after, seconds=10)
    reply = rig.records[1].reply
    assert heard_share(opening(reply), text) >= 0.75, (reply, text)


@pytest.mark.models
@pytest.mark.parametrize("aec", [True, False], ids=["aec", "gate-only"])
async def test_the_reply_looped_back_at_0_db_starts_nothing(
    pulse: PulseServer, tmp_path: Path, engines: Any, speak: Any, aec: bool
) -> None:
    question = np.concatenate([speak("Tell me about the history of Rome."), silence(300)])
    pulse.loopback("spk.monitor", "mic")
    config = talkative(Config())
    rig = Rig(pulse, engines, with_aec(config, aec))
    await rig.start()
    await rig.play(write_wav(tmp_path / "q.wav", question, SPEECH_RATE))
    await rig.wait_turns(1, 120)
    await asyncio.sleep(2.0)  # the echo's tail, and any turn it might still start
    (mic, mic_t), _ = await rig.stop()

    rec = rig.records[0]
    assert [(r.outcome, r.transcript) for r in rig.records] == [("answered", rec.transcript)]
    assert rig.pipeline.tracker.actions["barge_in"] == 0
    assert rig.sink.interrupts == 0
    assert rec.reply_audio_ms > 8000, "the reply is too short to say anything about echo"
    assert loud(mic, 1000).size > SPEECH_RATE * 4, "the microphone did not hear the reply"
    apm = rig.pipeline._apm  # noqa: SLF001 - what ran
    if aec:
        assert apm is not None and apm.processor is not None and apm.processor.features.echo
    else:
        assert apm is None, "nothing on: no processing stage"
    vad = rig.pipeline._vad  # noqa: SLF001 - what the VAD heard
    assert vad is not None and vad.echo_gate is not None
    gate = vad.echo_gate
    print(
        f"echo gate: coupling {gate.coupling:.3f}, gated {gate.gated}, unlike the playback {gate.unlike};"
        f" speaker paused {rig.sink.pauses} times"  # a level false alarm: a gap of a few frames, no turn
    )


def echo_cancel_module(pulse: PulseServer, method: str = "webrtc") -> str:
    """PulseAudio's ``module-echo-cancel`` between the virtual devices (its index): ``ec_mic`` is
    the microphone with the echo removed, ``ec_spk`` the speaker it takes the far end from
    (``method = "null"``: nothing removed). Skips when the server lacks the module."""
    proc = pulse.pactl(
        "load-module", "module-echo-cancel", "source_master=mic.monitor", "sink_master=spk",
        f"aec_method={method}", "source_name=ec_mic", "sink_name=ec_spk",
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"module-echo-cancel is not available here: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def through_module(
    pulse: PulseServer, tmp_path: Path, reply: np.ndarray, question: np.ndarray
) -> dict[str, float]:
    """Play ``reply`` on ``ec_spk`` and then ``question`` into ``mic``; the power of ``ec_mic``
    over the reply's second half and over the question, located by the recording's arrival times."""
    both = np.concatenate([reply, silence(500), np.zeros(question.size, dtype=np.int16)])
    near = np.concatenate([np.zeros(reply.size + SPEECH_RATE // 2, dtype=np.int16), question])
    both_wav = write_wav(tmp_path / "both.wav", both, SPEECH_RATE)
    near_wav = write_wav(tmp_path / "near.wav", near, SPEECH_RATE)
    recorder = Recorder(pulse, "ec_mic")
    time.sleep(1.0)
    started = time.monotonic()
    player, talker = pulse.play(both_wav, device="ec_spk"), pulse.play(near_wav, device="mic")
    player.wait(60)
    talker.wait(60)
    time.sleep(0.5)
    out, stamps = recorder.stop()
    assert player.returncode == 0 and talker.returncode == 0

    def power(start_s: float, end_s: float) -> float:
        lo, hi = np.searchsorted(stamps, [started + start_s, started + end_s])
        return float(np.mean(out[lo:hi].astype(np.float64) ** 2)) + 1e-9

    reply_s = reply.size / SPEECH_RATE
    return {
        "reply": power(reply_s / 2, reply_s - 0.2),
        "question": power(reply_s + 0.7, reply_s + 0.5 + question.size / SPEECH_RATE),
    }


def test_pulseaudio_echo_cancel_module_removes_the_looped_back_reply(
    pulse: PulseServer, tmp_path: Path, espeak: Any
) -> None:
    """The module between the devices: the reply played on ``ec_spk`` (which plays on ``spk``,
    looped back into ``mic``), then the user's question into ``mic``. With ``aec_method=null``
    ``ec_mic`` hears the reply as loud as it plays (the loopback works through the module); with
    WebRTC's canceller it keeps the question and loses the reply."""
    reply = espeak(REPLY_TEXT, tmp_path).astype(np.float32)
    reply = (reply * (0.5 * 32767 / np.abs(reply).max())).astype(np.int16)
    question = espeak("What is the capital of France?", tmp_path).astype(np.float32)
    question = (question * (0.5 * 32767 / np.abs(question).max())).astype(np.int16)
    pulse.loopback("spk.monitor", "mic")
    index = echo_cancel_module(pulse, "null")
    raw = through_module(pulse, tmp_path, reply, question)
    assert raw["reply"] > 2000.0**2, (
        f"the microphone did not hear the reply (RMS {np.sqrt(raw['reply']):.0f})"
    )
    assert pulse.pactl("unload-module", index).returncode == 0
    echo_cancel_module(pulse, "webrtc")
    out = through_module(pulse, tmp_path, reply, question)
    residue, kept = out["reply"], out["question"]
    print(f"module-echo-cancel: the question {10 * np.log10(kept / residue):.1f} dB over the reply's residue")
    assert kept > 10 * residue, "the question did not come through, or the reply was not removed"
    enhancement = 10 * np.log10(raw["reply"] / residue)
    print(f"loopback ERLE (module-echo-cancel, 0 dB echo): {enhancement:.1f} dB")
    assert enhancement > 6.0
