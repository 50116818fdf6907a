"""The end-of-turn model: Smart Turn v3.2 on real speech, the segmenter's table of judges, the VAD
stage asking the real model in its thread, the fallback without the model, and the config."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from assistant import models
from assistant.config import Config, VadConfig
from assistant.contracts import TurnDetector
from assistant.endpointing.segmenter import Ended, Paused, Segmenter
from assistant.engines import TURN_MODEL, load_turn_model
from assistant.errors import ConfigError, ModelCorruptError
from assistant.messages import AudioIn, Utterance
from assistant.service.lifecycle import LIVE_KEYS
from assistant.stages.vad import ASKS_TURN_MODEL, VadStage
from assistant.text.speakable import looks_open, transcript_kind
from assistant.turn.reports import EndpointFinal, ReportLog

from .conftest import steady_piper

MANIFEST = Path(__file__).resolve().parents[1] / "models" / "manifest.toml"

# ------------------------------------------------------------------------------ the segmenter

# 30 ms frames; the pause at 150 ms, quick end 300, end 600, hold 1200
JUDGED = VadConfig(speculate_after_ms=150, quick_end_silence_ms=300, end_silence_ms=600, hold_silence_ms=1200)


def frame(index: int) -> bytes:
    return np.full(480, index, dtype="<i2").tobytes()


def endpoint_after(*judges: tuple[str, object], at_frame: int = 5) -> float | None:
    """Silence (ms after 450 ms of speech) at which the turn ends, the judges speaking once the
    pause has lasted ``at_frame`` frames; None if it has not ended after 2 s."""
    seg = Segmenter(replace(JUDGED, fine_end=False))
    for i in range(15):
        seg.process(frame(i), True)
    for i in range(15, 15 + 67):
        events = seg.process(frame(i), False)
        if i == 19:
            assert isinstance(events[-1], Paused)  # 150 ms of silence
        if i == 15 + at_frame - 1:
            for name, value in judges:
                if name == "model":
                    events += seg.turn_verdict(bool(value))
                else:
                    events += seg.heard(str(value))
        if any(isinstance(e, Ended) for e in events):
            return (i + 1) * 30.0 - 450.0
    return None


@pytest.mark.parametrize(
    ("judges", "silence_ms"),
    [
        ((), 600.0),  # nobody judged: the end-of-turn silence
        ((("heard", "finished"),), 300.0),  # the transcript alone, as before
        ((("heard", "open"),), 1200.0),  # "Set a timer for": held
        ((("model", False),), 1200.0),  # the model says incomplete: held
        ((("model", False), ("heard", "unsure")), 1200.0),
        ((("model", False), ("heard", "question")), 300.0),  # a question overrules the model
        ((("model", False), ("heard", "finished")), 600.0),  # a statement: the usual silence
        ((("model", True),), 600.0),  # complete, but the words are not in yet
        ((("model", True), ("heard", "unsure")), 300.0),  # complete, and the words allow it
        ((("model", True), ("heard", "finished")), 210.0),  # both agree: the agreed end (200, whole frames)
        ((("model", True), ("heard", "question")), 210.0),
        ((("model", True), ("heard", "open")), 1200.0),  # the words show the cut
    ],
)
def test_the_judges_set_the_end_of_turn_silence(
    judges: tuple[tuple[str, object], ...], silence_ms: float
) -> None:
    assert endpoint_after(*judges) == silence_ms


def test_when_both_judges_agree_the_agreed_end_applies() -> None:
    seg = Segmenter(replace(JUDGED, fine_end=False, agreed_end_silence_ms=180))
    for i in range(15):
        seg.process(frame(i), True)
    events = [e for i in range(15, 20) for e in seg.process(frame(i), False)]  # paused at 150 ms
    assert seg.turn_verdict(True) == [] and seg.heard("question") == []
    assert isinstance(seg.process(frame(20), False)[-1], Ended)  # 180 ms: sooner than 300
    assert any(isinstance(e, Paused) for e in events)
    alone = Segmenter(replace(JUDGED, fine_end=False, agreed_end_silence_ms=180))
    for i in range(15):
        alone.process(frame(i), True)
    for i in range(15, 20):
        alone.process(frame(i), False)
    alone.heard("question")  # the words alone: the quick end, not the agreed one
    assert not any(isinstance(e, Ended) for i in range(20, 24) for e in alone.process(frame(i), False))


def test_a_late_verdict_that_allows_less_silence_ends_the_turn_at_once() -> None:
    # the words and the model agree when 450 ms of silence have passed: quick end is 300, so now
    assert endpoint_after(("heard", "finished"), ("model", True), at_frame=15) == 450.0


def paused_segmenter(*, due: bool) -> Segmenter:
    """450 ms of speech, then 150 ms of silence (paused); the turn model asked when ``due``."""
    seg = Segmenter(replace(JUDGED, fine_end=False))
    for i in range(15):
        seg.process(frame(i), True)
    for i in range(15, 20):
        seg.process(frame(i), False)
    seg.verdict_due = due
    return seg


def ended_at(seg: Segmenter, frames: range, verdict_at: int | None = None, complete: bool = False) -> Ended:
    """The first ``Ended`` while ``frames`` of silence pass (the verdict given before ``verdict_at``)."""
    for i in frames:
        events = seg.turn_verdict(complete) if i == verdict_at else []
        events += seg.process(frame(i), False)
        for event in events:
            if isinstance(event, Ended):
                return event
    raise AssertionError("the turn did not end")


@pytest.mark.parametrize(("complete", "silence_ms"), [(False, 600.0), (True, 450.0)])
def test_a_finished_statement_waits_for_a_due_verdict(complete: bool, silence_ms: float) -> None:
    # "Set a tie with four." heard in the pause of "Set a timer for ... five minutes": the words
    # alone end it at the quick end (300 ms); asked, the model is waited for
    alone = paused_segmenter(due=False)
    assert alone.heard("finished") == []
    assert ended_at(alone, range(20, 60)).endpoint_ms == 15 * 30.0 + 300.0
    due = paused_segmenter(due=True)
    assert due.heard("finished") == []
    ended = ended_at(due, range(20, 60), verdict_at=30, complete=complete)  # in at 450 ms of silence
    assert ended.endpoint_ms == 15 * 30.0 + silence_ms
    expected = "complete" if complete else "incomplete"
    assert ended.judged == f"transcript finished, model {expected}"


def test_a_question_does_not_wait_for_the_verdict() -> None:
    seg = paused_segmenter(due=True)
    assert seg.heard("question") == []
    ended = ended_at(seg, range(20, 60))
    assert ended.endpoint_ms == 15 * 30.0 + 300.0
    assert ended.judged == "transcript question, model none"


def test_the_judges_forget_a_pause_when_speech_resumes() -> None:
    seg = Segmenter(replace(JUDGED, fine_end=False))
    for i in range(15):
        seg.process(frame(i), True)
    for i in range(15, 20):
        seg.process(frame(i), False)
    seg.turn_verdict(False)  # held...
    seg.process(frame(20), True)  # ...the user goes on: the verdict was about that pause
    ends = [(i, e) for i in range(21, 60) for e in seg.process(frame(i), False)]
    (i, ended), *_ = [(i, e) for i, e in ends if isinstance(e, Ended)]
    assert ended.endpoint_ms == 21 * 30.0 + 600.0


def test_an_unknown_transcript_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        Segmenter(JUDGED).heard("maybe")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("What is the capital of France?", "question"),
        ("Turn off the lamp.", "finished"),
        ("Set a timer for", "open"),
        ("What is the capital of?", "open"),  # as Whisper punctuates a cut question
        ("Turn on the...", "open"),
        ("Turn the lights on.", "unsure"),  # not finished by looks_complete, but not open either
        ("Set a timer for 10 minutes", "unsure"),  # no full stop: the words cannot tell
        ("", "unsure"),
    ],
)
def test_transcript_kinds(text: str, kind: str) -> None:
    assert transcript_kind(text) == kind
    assert looks_open(text) is (kind == "open")


# ------------------------------------------------------------------------------ the real model


@pytest.fixture(scope="module")
def turn_path(model_dir: Path) -> Path:
    try:
        return models.resolve(TURN_MODEL, "turn", model_dir, models.load_manifest(MANIFEST))
    except models.ModelMissingError as err:
        pytest.skip(f"the turn model is not downloaded ({err.message})")


@pytest.fixture(scope="module")
def turn_engine(turn_path: Path):  # type: ignore[no-untyped-def]
    from assistant.engines.smart_turn import SmartTurnEngine

    engine = SmartTurnEngine(turn_path)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def piper(model_dir: Path):  # type: ignore[no-untyped-def]
    """Text -> 16 kHz int16 speech in the default piper voice, the same take every run, so the
    model's verdicts are repeatable."""
    return steady_piper(model_dir)


def trimmed(samples: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(samples) > 328)
    return samples[loud[0] : loud[-1] + 1]


def paused(samples: np.ndarray, pause_ms: int) -> tuple[np.ndarray, int]:
    """Speech with its widest inner gap (a comma) set to ``pause_ms`` of silence; and the sample
    where the gap starts."""
    loud = np.flatnonzero(np.abs(samples) > 328)
    i = int(np.argmax(np.diff(loud)))
    stop, again = int(loud[i]) + 1, int(loud[i + 1])
    gap = np.zeros(16 * pause_ms, dtype="<i2")
    return np.concatenate([samples[:stop], gap, samples[again:]]), stop


def with_silence(samples: np.ndarray, lead_ms: int = 300, trail_ms: int = 150) -> bytes:
    lead, trail = np.zeros(16 * lead_ms, "<i2"), np.zeros(16 * trail_ms, "<i2")
    return np.concatenate([lead, samples, trail]).astype("<i2").tobytes()


def test_a_finished_question_scores_complete(turn_engine, piper) -> None:  # type: ignore[no-untyped-def]
    speech = trimmed(piper("What is the capital of France?"))
    assert turn_engine.complete_probability(with_silence(speech)) > 0.8


def test_a_question_cut_at_its_pause_scores_incomplete(turn_engine, piper) -> None:  # type: ignore[no-untyped-def]
    # said as a whole sentence, so the words before the pause carry its unfinished intonation
    # (here 0.03 and 0.02; "What is the capital of, Australia?" cut so scores 0.65, and 0.13 to
    # 0.56 in piper's varied takes: the model is not reliable on every cut)
    speech, stop = paused(trimmed(piper("Set a timer for, ten minutes.")), 800)
    assert turn_engine.complete_probability(with_silence(speech[:stop])) < 0.2
    assert turn_engine.complete_probability(with_silence(trimmed(piper("Turn on the")))) < 0.2


def test_longer_audio_than_the_window_and_odd_bytes_are_taken(turn_engine, piper) -> None:  # type: ignore[no-untyped-def]
    speech = trimmed(piper("What is the capital of France?"))
    long = with_silence(np.concatenate([speech] * 6))  # over 8 s: the last 8 s are judged
    assert 0.0 <= turn_engine.complete_probability(long + b"\0") <= 1.0


def test_a_corrupt_model_file_is_model_corrupt(tmp_path: Path) -> None:
    from assistant.engines.smart_turn import SmartTurnEngine

    bad = tmp_path / "smart-turn-v3.2-cpu.onnx"
    bad.write_bytes(b"<html>not a model</html>")
    with pytest.raises(ModelCorruptError, match="onnxruntime cannot load it"):
        SmartTurnEngine(bad).load()


# ------------------------------------------------------------------------------ the VAD stage


async def endpoints(
    vad: VadStage, channel: ReportLog, pcm: bytes, text: str | None = None
) -> list[EndpointFinal]:
    """Feed ``pcm`` unpaced; at each pause hand the stage ``text`` as the transcript, then wait (in
    real time) for the turn model's verdict from its thread, if the words asked for one. Returns
    the final endpoints."""
    step = 960
    for offset in range(0, len(pcm) - step + 1, step):
        for message in vad.feed(AudioIn(pcm[offset : offset + step], offset / 32)):
            if isinstance(message, Utterance) and message.speculative:
                asked = len(vad.verdicts)
                if text is not None:
                    vad.transcribed(message.turn_id, text)
                wanted = text is not None and transcript_kind(text) in ASKS_TURN_MODEL
                for _ in range(500):
                    if len(vad.verdicts) > asked or vad.turn_model is None or not wanted:
                        break
                    await asyncio.sleep(0.01)
    vad.finish()
    return [r for r in channel.reports if isinstance(r, EndpointFinal)]


def stage(engine, turn_model: bool = True) -> tuple[VadStage, ReportLog]:  # type: ignore[no-untyped-def]
    channel = ReportLog()
    return VadStage(replace(VadConfig(), turn_model=turn_model), channel, turn_model=engine), channel


async def test_the_stage_holds_a_paused_request_open_with_the_turn_model(turn_engine, piper) -> None:  # type: ignore[no-untyped-def]
    # a pause longer than the plain end of turn (600 ms), shorter than the hold (750 ms)
    speech, stop = paused(trimmed(piper("How many days are in, a leap year?")), 680)
    pcm = with_silence(speech, trail_ms=2000)
    resume_ms = 300 + (stop + 16 * 680) / 16
    # the words at the pause say nothing either way ("How many days"): the model decides
    vad, channel = stage(turn_engine)
    (final,) = await endpoints(vad, channel, pcm, "How many days")
    assert vad.verdicts and vad.verdicts[0][1] < 0.5
    assert final.endpoint_ms > resume_ms  # one turn, not cut at the pause
    vad, channel = stage(None, turn_model=False)
    first, *_ = await endpoints(vad, channel, pcm, "How many days")
    assert first.endpoint_ms < resume_ms  # without the model: cut in two


async def test_the_stage_commits_a_finished_question_early_with_the_turn_model(turn_engine, piper) -> None:  # type: ignore[no-untyped-def]
    pcm = with_silence(trimmed(piper("What is the capital of France?")), trail_ms=1500)
    # Whisper left the question mark off: the words alone wait the full end-of-turn silence
    vad, channel = stage(None, turn_model=False)
    (slow,) = await endpoints(vad, channel, pcm, "what is the capital of france")
    vad, channel = stage(turn_engine)
    (fast,) = await endpoints(vad, channel, pcm, "what is the capital of france")
    assert vad.verdicts[0][1] >= 0.5
    assert fast.endpoint_ms - fast.speech_end_ms <= 330  # the quick end (300 ms, whole frames)
    assert slow.endpoint_ms - slow.speech_end_ms >= 600


class CountingModel(TurnDetector):
    """Says "complete" and counts the questions it was asked."""

    def __init__(self) -> None:
        self.asked = 0

    def complete_probability(self, pcm: bytes) -> float:
        self.asked += 1
        return 0.9


@pytest.mark.parametrize(
    ("text", "asked"),
    [
        ("What is the capital of France?", 0),  # a question ends at the quick end anyway
        ("Set a timer for", 0),  # an open sentence is held whatever the model says
        ("Set a tie with four.", 1),  # a finished statement waits for the verdict
        ("what is the capital of france", 1),  # unsure: the model decides
    ],
)
async def test_the_turn_model_is_asked_only_when_the_words_leave_the_pause_to_it(
    piper: Callable[[str], np.ndarray], text: str, asked: int
) -> None:
    model = CountingModel()
    channel = ReportLog()
    vad = VadStage(VadConfig(), channel, turn_model=model)
    pcm = with_silence(trimmed(piper("What is the capital of France?")), trail_ms=1500)
    (final,) = await endpoints(vad, channel, pcm, text)
    assert model.asked == asked and len(vad.verdicts) == asked
    assert final.endpoint_ms > final.speech_end_ms


async def test_without_the_model_the_stage_says_so_and_judges_by_the_words(
    caplog: pytest.LogCaptureFixture, piper: Callable[[str], np.ndarray], tmp_path: Path
) -> None:
    engine, problem = load_turn_model(Config(), tmp_path, models.load_manifest(MANIFEST))  # no model here
    assert engine is None and f"assistant models pull {TURN_MODEL}" in problem
    with caplog.at_level(logging.WARNING):
        channel = ReportLog()
        vad = VadStage(VadConfig(), channel, turn_model=None, turn_model_problem=problem)
    assert "vad.turn_model is on but the turn model is unavailable" in caplog.text
    pcm = with_silence(trimmed(piper("What is the capital of France?")), trail_ms=1500)
    (final,) = await endpoints(vad, channel, pcm, "What is the capital of France?")
    assert final.endpoint_ms - final.speech_end_ms <= 330  # the transcript's quick end, as before


def test_a_missing_onnxruntime_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch, turn_path: Path
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    engine, problem = load_turn_model(Config(), turn_path.parent.parent, models.load_manifest(MANIFEST))
    assert engine is None and "onnxruntime is not installed" in problem


# ------------------------------------------------------------------------------ config


def test_config_checks_and_live_keys() -> None:
    assert VadConfig().turn_model and VadConfig().turn_threshold == 0.5
    with pytest.raises(ConfigError, match=r"vad.turn_threshold = 1.5 is out of range: allowed 0.0 to 1.0"):
        VadConfig(turn_threshold=1.5)
    with pytest.raises(ConfigError, match="vad.hold_silence_ms"):
        VadConfig(hold_silence_ms=50)
    with pytest.raises(ConfigError, match="vad.agreed_end_silence_ms"):
        VadConfig(agreed_end_silence_ms=10)
    live = {"vad.turn_model", "vad.turn_threshold", "vad.hold_silence_ms", "vad.agreed_end_silence_ms"}
    assert live <= LIVE_KEYS


def test_the_manifest_carries_the_turn_model_from_the_pipecat_wheel() -> None:
    spec = models.load_manifest(MANIFEST)[TURN_MODEL]
    (file,) = spec.files
    assert spec.role == "turn" and spec.license == "BSD-2-Clause"
    assert file.sources[0].package == "pipecat-ai" and file.size == 8_679_182 and file.sha256


def test_a_threshold_change_applies_live(turn_engine) -> None:  # type: ignore[no-untyped-def]
    vad, _ = stage(turn_engine)
    vad.reconfigure(replace(VadConfig(), turn_threshold=0.9, turn_model=False))
    assert vad.config.turn_threshold == 0.9 and not vad.config.turn_model


@pytest.mark.parametrize(("turn_model", "pulled"), [(True, True), (False, False)])
def test_models_pull_fetches_the_turn_model_while_it_is_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, turn_model: bool, pulled: bool
) -> None:
    from assistant import cli

    shipped = models.load_manifest(MANIFEST)
    names: list[str] = []
    monkeypatch.setattr(models, "load_manifest", lambda path=None: shipped)
    monkeypatch.setattr(models, "pull", lambda spec, model_dir, log=None: names.append(spec.name) or "ok")
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(f"[vad]\nturn_model = {str(turn_model).lower()}\n")
    assert cli.main(["--model-dir", str(tmp_path), "--pipeline", str(pipeline), "models", "pull"]) == 0
    assert (TURN_MODEL in names) is pulled and "whisper-tiny.en" in names
