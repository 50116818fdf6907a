"""The VAD stage on real webrtcvad: espeak-ng speech, silence, pink noise, mains hum, endless speech.

Speech is synthesized with ``espeak-ng`` and resampled to 16 kHz with ``sox``; tests that need them
skip (with the reason) where they are missing. Where the speech really is comes from its energy.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from assistant.config import VadConfig
from assistant.endpointing.envelope import MAX_LEAD_MS
from assistant.errors import StageError
from assistant.messages import AudioIn, EndOfStream, Message, SpeechStarted, Utterance
from assistant.stages.vad import Framer, HighPass, VadStage
from assistant.turn.registry import Turns
from assistant.turn.reports import ReportLog

RATE = 16_000
TOLERANCE_MS = 150
ODD_SIZES = (1, 3, 7, 333, 1001, 4095, 5, 960, 17)
"""Byte sizes of the pieces fed to the stage, cycled (odd counts split samples)."""

needs_tools = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng and sox are needed to make test speech",
)


def synth(directory: Path, name: str, text: str) -> np.ndarray:
    """Speak ``text`` with espeak-ng (22,050 Hz) and resample to 16 kHz mono int16."""
    raw, wav = directory / f"{name}-raw.wav", directory / f"{name}.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True)
    samples, rate = sf.read(wav, dtype="int16")
    assert rate == RATE
    return np.asarray(samples, dtype=np.int16)


def speech_span_ms(samples: np.ndarray) -> tuple[float, float]:
    """Start and end of the loud part (10 ms windows above 5% of the loudest), in ms."""
    windows = samples[: len(samples) // 160 * 160].astype(float).reshape(-1, 160)
    rms = np.sqrt((windows**2).mean(axis=1))
    loud = np.flatnonzero(rms > 0.05 * rms.max())
    return loud[0] * 10.0, (loud[-1] + 1) * 10.0


def trim(samples: np.ndarray) -> np.ndarray:
    start, end = speech_span_ms(samples)
    return samples[int(start * 16) : int(end * 16)]


def silence(ms: float) -> np.ndarray:
    return np.zeros(int(ms * 16), dtype=np.int16)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, np.ndarray]]:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed to make test speech")
    directory = tmp_path_factory.mktemp("speech")
    yield {
        "capital": synth(directory, "capital", "what is the capital of france"),
        "light": synth(directory, "light", "turn on the kitchen light please"),
    }


async def run_stage(
    samples: np.ndarray | bytes,
    config: VadConfig | None = None,
    *,
    sizes: tuple[int, ...] = ODD_SIZES,
    origin_ms: float = 0.0,
    turns: Turns | None = None,
) -> tuple[list[Message], VadStage]:
    """Feed audio as AudioIn pieces of the given byte sizes; return everything the stage put out."""
    pcm = samples if isinstance(samples, bytes) else samples.astype("<i2").tobytes()
    stage = VadStage(config or VadConfig(speculate_after_ms=0), ReportLog(turns=turns))
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    offset, i = 0, 0
    while offset < len(pcm):
        size = sizes[i % len(sizes)]
        inbox.put_nowait(AudioIn(pcm=pcm[offset : offset + size], start_ms=origin_ms + offset / 32))
        offset, i = offset + size, i + 1
    inbox.put_nowait(EndOfStream())
    await asyncio.wait_for(stage.run(inbox, outbox), timeout=60)
    out = [outbox.get_nowait() for _ in range(outbox.qsize())]
    assert out[-1] == EndOfStream()
    return out[:-1], stage


def utterances(out: list[Message]) -> list[Utterance]:
    return [m for m in out if isinstance(m, Utterance)]


# --- Framer and HighPass (no speech tools needed) ---------------------------------------------


def test_framer_rechunks_odd_pieces_into_whole_frames() -> None:
    framer = Framer(30)
    data = bytes(range(256)) * 40
    frames: list[bytes] = []
    offset = 0
    for size in ODD_SIZES * 4:
        frames += framer.push(data[offset : offset + size])
        offset += size
    assert all(len(f) == 960 for f in frames)
    assert b"".join(frames) == data[: len(frames) * 960]
    assert framer.pending == min(offset, len(data)) - len(frames) * 960


def test_framer_holds_an_odd_byte_until_the_frame_is_whole() -> None:
    framer = Framer(10)
    assert framer.push(b"\1" * 321) == [b"\1" * 320]
    assert framer.pending == 1
    assert framer.push(b"\2" * 319) == [b"\1" + b"\2" * 319]
    assert framer.pending == 0


def test_highpass_removes_hum_and_keeps_speech_band() -> None:
    t = np.arange(RATE) / RATE

    def level_db(freq: float) -> float:
        tone = (10_000 * np.sin(2 * np.pi * freq * t)).astype("<i2")
        out = np.frombuffer(HighPass()(tone.tobytes()), dtype="<i2")[RATE // 2 :]
        return float(20 * np.log10(out.std() / tone[RATE // 2 :].std()))

    assert level_db(50) < -30
    assert level_db(60) < -30
    assert abs(level_db(1000)) < 0.5


def test_missing_webrtcvad_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "webrtcvad", None)
    with pytest.raises(StageError, match="webrtcvad-wheels") as info:
        VadStage(VadConfig(), ReportLog())
    assert info.value.code == "vad_failed"


# --- real speech -------------------------------------------------------------------------------


@needs_tools
async def test_one_utterance_where_the_speech_is(speech: dict[str, np.ndarray]) -> None:
    clip = speech["capital"]
    start, end = speech_span_ms(clip)
    out, stage = await run_stage(np.concatenate([silence(1000), clip, silence(1500)]), origin_ms=250.0)
    assert [type(m) for m in out] == [SpeechStarted, Utterance]
    started, utt = out
    assert isinstance(started, SpeechStarted) and isinstance(utt, Utterance)
    assert started.turn_id == utt.turn_id == 1
    assert started.start_ms == utt.speech_start_ms
    assert abs(utt.speech_start_ms - (250 + 1000 + start)) <= TOLERANCE_MS
    assert abs(utt.speech_end_ms - (250 + 1000 + end)) <= TOLERANCE_MS
    # 600 ms of silence from the fine end of speech, to the end of the frame that completes it
    assert 600 <= utt.endpoint_ms - utt.speech_end_ms < 630
    assert not utt.truncated
    # Pre-roll (300 ms) before the speech, at most 200 ms after the VAD's end (which the fine end
    # precedes by at most MAX_LEAD_MS).
    spoken = (utt.speech_end_ms - utt.speech_start_ms + 500) * 32
    assert spoken - 2 <= len(utt.pcm) <= spoken + MAX_LEAD_MS * 32
    assert (stage.utterances, stage.dropped, stage.truncated) == (1, 0, 0)
    assert stage.frames == (1000 + len(clip) / 16 + 1500) // 30


@needs_tools
async def test_two_utterances_in_order(speech: dict[str, np.ndarray]) -> None:
    first, second = speech["capital"], speech["light"]
    audio = np.concatenate([silence(500), first, silence(2000), second, silence(1000)])
    out, _ = await run_stage(audio)
    assert [(type(m), m.turn_id) for m in out if isinstance(m, SpeechStarted | Utterance)] == [
        (SpeechStarted, 1),
        (Utterance, 1),
        (SpeechStarted, 2),
        (Utterance, 2),
    ]
    one, two = utterances(out)
    second_at = 500 + len(first) / 16 + 2000
    assert abs(one.speech_start_ms - (500 + speech_span_ms(first)[0])) <= TOLERANCE_MS
    assert abs(two.speech_start_ms - (second_at + speech_span_ms(second)[0])) <= TOLERANCE_MS
    assert abs(two.speech_end_ms - (second_at + speech_span_ms(second)[1])) <= TOLERANCE_MS


@needs_tools
async def test_odd_chunks_give_the_same_result_as_one_piece(speech: dict[str, np.ndarray]) -> None:
    audio = np.concatenate([silence(700), speech["light"], silence(900)])
    pcm = audio.astype("<i2").tobytes() + b"\x01"  # a trailing odd byte too
    odd, _ = await run_stage(pcm)
    whole, _ = await run_stage(pcm, sizes=(len(pcm),))
    assert odd == whole
    assert len(utterances(odd)) == 1


@needs_tools
async def test_short_blip_is_dropped_and_cancelled(speech: dict[str, np.ndarray]) -> None:
    clip = trim(speech["capital"])
    blip = clip[: 16 * 120]
    turns = Turns()
    audio = np.concatenate([silence(500), blip, silence(1500), speech["light"], silence(1000)])
    out, stage = await run_stage(audio, turns=turns)
    assert [(type(m), m.turn_id) for m in out if isinstance(m, SpeechStarted | Utterance)] == [
        (SpeechStarted, 1),
        (SpeechStarted, 2),
        (Utterance, 2),
    ]
    assert turns.is_cancelled(1) and not turns.is_cancelled(2)
    assert stage.dropped == 1


def noise(tmp_path: Path) -> np.ndarray:
    wav = tmp_path / "noise.wav"
    command = ["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(wav), "synth", "3", "pinknoise"]
    subprocess.run([*command, "vol", "0.02"], check=True)
    return np.asarray(sf.read(wav, dtype="int16")[0], dtype=np.int16)


def hum(freq: float, amplitude: float, seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


@pytest.mark.parametrize(
    "kind", ["silence", "pink noise", "hum 50 Hz", "loud hum 50 Hz", "hum 60 Hz", "loud hum 60 Hz"]
)
@pytest.mark.parametrize("aggressiveness", [0, 2, 3])
async def test_no_utterance_from_silence_noise_or_hum(kind: str, aggressiveness: int, tmp_path: Path) -> None:
    if kind == "silence":
        audio = silence(3000)
    elif kind == "pink noise":
        if shutil.which("sox") is None:
            pytest.skip("sox is needed to make pink noise")
        audio = noise(tmp_path)
    else:
        audio = hum(50 if "50" in kind else 60, 10_000 if "loud" in kind else 3000)
    out, stage = await run_stage(audio, VadConfig(aggressiveness=aggressiveness, speculate_after_ms=0))
    assert utterances(out) == []
    assert stage.utterances == 0
    if aggressiveness >= 2:  # the recommended modes do not even start (and cancel) a turn
        assert out == []


@needs_tools
async def test_speech_at_the_very_start_survives_the_warm_up(speech: dict[str, np.ndarray]) -> None:
    clip = speech["capital"]
    out, _ = await run_stage(np.concatenate([clip, silence(1000)]))
    (utt,) = utterances(out)
    assert utt.speech_start_ms <= 90 + 30
    assert abs(utt.speech_end_ms - speech_span_ms(clip)[1]) <= TOLERANCE_MS
    assert len(utt.pcm) >= (utt.speech_end_ms + 100) * 32  # from sample 0, warm-up included


@needs_tools
async def test_endless_speech_is_cut_at_max_length_and_rearms_after_silence(
    speech: dict[str, np.ndarray],
) -> None:
    talk = np.concatenate([trim(speech["capital"]), trim(speech["light"])])
    endless = np.tile(talk, int(20_000 * 16 / len(talk)) + 1)[: 20_000 * 16]
    audio = np.concatenate([silence(500), endless, silence(1000), speech["capital"], silence(1000)])
    out, stage = await run_stage(audio, VadConfig(max_utterance_ms=5000, speculate_after_ms=0))
    cut, after = utterances(out)
    assert (cut.turn_id, after.turn_id) == (1, 2)
    assert cut.truncated and not after.truncated
    assert cut.endpoint_ms - cut.speech_start_ms == pytest.approx(5000, abs=30)
    assert len(cut.pcm) <= (300 + 5000 + 30) * 32  # pre-roll + max, to the frame
    assert after.speech_start_ms > 500 + 20_000
    assert stage.truncated == 1


@needs_tools
@pytest.mark.parametrize("gate", [True, False])
async def test_a_steady_noise_that_starts_out_of_silence_is_not_speech_for_long(
    speech: dict[str, np.ndarray], gate: bool
) -> None:
    """A fan switched on after a question: 1 s of silence, then pink noise for 9 s, with a second
    question 6 s into it at 15 dB SNR. webrtcvad, having heard speech, calls the noise speech from
    its start to the second question's end; with the floor gate the noise is its own floor within
    1.5 s, and the question stands above it."""
    from assistant.bench.corpus import pink_noise, rms

    def peak(clip: np.ndarray) -> np.ndarray:  # as the bench's corpus: peaks at -6 dBFS
        x = clip.astype(np.float32)
        return x * (0.5 / np.max(np.abs(x)))

    first, second = peak(speech["light"]), peak(speech["capital"])
    noise = pink_noise(16 * 9000, seed=5) * rms(second[np.abs(second) > 0.01]) / 10 ** (15 / 20)
    noise[16 * 6000 : 16 * 6000 + second.size] += second
    pcm = np.concatenate([first, np.zeros(16000, np.float32), noise])
    config = VadConfig(floor_gate=gate, speculate_after_ms=0)
    found = utterances((await run_stage(np.clip(pcm * 32768, -32768, 32767), config))[0])
    onset = first.size / 16 + 1000
    assert found[0].speech_end_ms < onset  # the first question, ended by the silence
    last = found[-1]
    if gate:  # the noise's own turn, if any, ends within its first 1.5 s (plus a frame or two)
        assert all(u.speech_end_ms < onset + 1500 + 100 for u in found[1:-1])
        assert onset + 5900 < last.speech_start_ms < onset + 6300  # the second question, from its start
    else:
        assert last.speech_start_ms < onset + 100  # webrtcvad took the noise for speech throughout
