"""Pure tests of the clock-free endpointer: synthetic frames, given VAD verdicts, exact positions."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from assistant.config import VadConfig
from assistant.endpointing.envelope import MAX_LEAD_MS
from assistant.endpointing.segmenter import (
    Dropped,
    Ended,
    Paused,
    Resumed,
    Segmenter,
    SegmenterEvent,
    Started,
)

# 30 ms frames: start 3 voiced frames (window 6), end 20 silent frames, pre-roll 10 frames,
# min speech 9 frames (270 ms >= 250 ms; 8 frames = 240 ms is too few), max 40 frames.
CONFIG = VadConfig(
    frame_ms=30,
    preroll_ms=300,
    start_ms=90,
    end_silence_ms=600,
    min_speech_ms=250,
    max_utterance_ms=1200,
    speculate_after_ms=0,
)
BYTES_PER_MS = 32  # 16 kHz int16 mono
Events = list[tuple[int, SegmenterEvent]]


def frame(index: int, frame_ms: int = 30) -> bytes:
    """A frame whose every sample holds its own frame index, so audio can be traced back."""
    return np.full(16 * frame_ms, index, dtype="<i2").tobytes()


def run(pattern: str, config: VadConfig = CONFIG, *, finish: bool = False) -> Events:
    """Feed one frame per character ('1' voiced, '0' not); return (frame index, event) pairs."""
    seg = Segmenter(config)
    events: Events = []
    for i, flag in enumerate(pattern):
        events += [(i, e) for e in seg.process(frame(i, config.frame_ms), flag == "1")]
    if finish:
        events += [(len(pattern), e) for e in seg.finish()]
    return events


def only(events: Events, kind: type[SegmenterEvent]) -> list[SegmenterEvent]:
    return [e for _, e in events if isinstance(e, kind)]


def first_frame_of(pcm: bytes) -> int:
    return int(np.frombuffer(pcm[:2], dtype="<i2")[0])


def test_start_needs_enough_voiced_frames() -> None:
    assert run("00000" + "11" + "0" * 40, finish=True) == []
    assert run("00000" + "111") == [(7, Started(start_ms=150.0))]


def test_start_tolerates_gaps_within_the_window() -> None:
    # 3 voiced frames in 5: starts at the 3rd voiced frame, speech starts at the 1st.
    assert run("0000" + "10101") == [(8, Started(start_ms=120.0))]
    # 3 voiced frames spread over 7 frames: never 3 inside a 6-frame window.
    assert run("0000" + "1001001" + "0" * 30) == []


def test_single_click_does_not_start_a_turn() -> None:
    assert run("0" * 10 + "1" + "0" * 40, finish=True) == []
    assert run(("1" + "0" * 6) * 20, finish=True) == []


def test_end_after_end_silence() -> None:
    assert only(run("0" * 20 + "1" * 20 + "0" * 19), Ended) == []
    events = run("0" * 20 + "1" * 20 + "0" * 20)
    assert [(i, type(e)) for i, e in events] == [(22, Started), (59, Ended)]
    (ended,) = only(events, Ended)
    assert isinstance(ended, Ended)
    assert (ended.speech_start_ms, ended.speech_end_ms, ended.endpoint_ms) == (600.0, 1200.0, 1800.0)
    assert not ended.truncated


def test_pcm_has_preroll_and_a_200_ms_tail() -> None:
    (ended,) = only(run("0" * 20 + "1" * 20 + "0" * 20), Ended)
    assert isinstance(ended, Ended)
    # From 300 ms before the first voiced frame (frame 10) to 200 ms after the last one.
    assert first_frame_of(ended.pcm) == 10
    assert len(ended.pcm) == (1400 - 300) * BYTES_PER_MS


def test_preroll_is_clamped_at_start_of_input() -> None:
    (ended,) = only(run("000" + "1" * 20 + "0" * 20), Ended)
    assert isinstance(ended, Ended)
    assert first_frame_of(ended.pcm) == 0
    assert len(ended.pcm) == (690 + 200) * BYTES_PER_MS


def test_short_blip_is_dropped() -> None:
    events = run("0" * 10 + "1" * 8 + "0" * 20)
    assert [type(e) for _, e in events] == [Started, Dropped]
    (dropped,) = only(events, Dropped)
    assert isinstance(dropped, Dropped)
    assert dropped.voiced_ms == 240.0
    assert "250" in dropped.reason
    assert [type(e) for _, e in run("0" * 10 + "1" * 9 + "0" * 20)] == [Started, Ended]


def test_max_length_cut_then_waits_for_silence() -> None:
    pattern = "0" * 10 + "1" * 100 + "0" * 19 + "1" + "0" * 20 + "1" * 20 + "0" * 20
    events = run(pattern)
    assert [(i, type(e)) for i, e in events] == [(12, Started), (49, Ended), (152, Started), (189, Ended)]
    cut, second = only(events, Ended)
    assert isinstance(cut, Ended) and isinstance(second, Ended)
    assert cut.truncated and not second.truncated
    assert (cut.speech_start_ms, cut.speech_end_ms, cut.endpoint_ms) == (300.0, 1500.0, 1500.0)
    assert len(cut.pcm) == 1500 * BYTES_PER_MS  # pre-roll (300 ms) + max length (1200 ms)
    # The 60 voiced frames after the cut and the lone voiced frame (index 129) that broke the first
    # silence do not start a turn; 20 silent frames (130..149) re-arm it; speech from frame 150 starts one.
    assert second.speech_start_ms == 150 * 30


def test_endless_speech_gives_one_truncated_utterance() -> None:
    events = run("1" * 1000, finish=True)
    assert [type(e) for _, e in events] == [Started, Ended]
    (cut,) = only(events, Ended)
    assert isinstance(cut, Ended) and cut.truncated


def test_finish_ends_open_utterance_at_end_of_input() -> None:
    events = run("0" * 5 + "1" * 20 + "0" * 5, finish=True)
    assert [(i, type(e)) for i, e in events] == [(7, Started), (30, Ended)]
    (ended,) = only(events, Ended)
    assert isinstance(ended, Ended)
    assert (ended.speech_start_ms, ended.speech_end_ms, ended.endpoint_ms) == (150.0, 750.0, 900.0)
    assert not ended.truncated
    assert len(ended.pcm) == 900 * BYTES_PER_MS  # tail capped by the end of input


def test_finish_drops_open_utterance_with_too_little_speech() -> None:
    assert [type(e) for _, e in run("0" * 5 + "1" * 5, finish=True)] == [Started, Dropped]


def test_segmenter_keeps_working_after_finish() -> None:
    seg = Segmenter(CONFIG)
    for i in range(20):
        seg.process(frame(i), True)
    assert [type(e) for e in seg.finish()] == [Ended]
    events = [e for i in range(20, 60) for e in seg.process(frame(i), 20 <= i < 40)]
    assert [type(e) for e in events] == [Started, Ended]
    assert seg.finish() == []


def test_two_utterances_in_order() -> None:
    # (900 ms apart: with the default vad.continue_ms the second would continue the first)
    events = run("0" * 10 + "1" * 15 + "0" * 30 + "1" * 12 + "0" * 20, replace(CONFIG, continue_ms=0))
    assert [type(e) for _, e in events] == [Started, Ended, Started, Ended]
    first, second = only(events, Ended)
    assert isinstance(first, Ended) and isinstance(second, Ended)
    assert (first.speech_start_ms, first.speech_end_ms) == (300.0, 750.0)
    assert (second.speech_start_ms, second.speech_end_ms) == (55 * 30, 67 * 30)
    assert first.endpoint_ms < second.speech_start_ms


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_positions_for_every_frame_length(frame_ms: int) -> None:
    config = VadConfig(
        frame_ms=frame_ms,
        preroll_ms=300,
        start_ms=60,
        end_silence_ms=600,
        min_speech_ms=0,
        speculate_after_ms=0,
    )
    block = 1200 // frame_ms  # 1.2 s of frames
    pattern = "0" * block + "1" * block + "0" * block
    (ended,) = only(run(pattern, config), Ended)
    assert isinstance(ended, Ended)
    assert (ended.speech_start_ms, ended.speech_end_ms) == (1200.0, 2400.0)
    assert ended.endpoint_ms == 2400 + 600
    assert len(ended.pcm) == (2600 - 900) * BYTES_PER_MS


def test_wrong_frame_size_is_refused() -> None:
    with pytest.raises(ValueError, match="expected 960"):
        Segmenter(CONFIG).process(b"\0" * 100, True)


SPECULATING = replace(CONFIG, speculate_after_ms=150, quick_end_silence_ms=300, max_utterance_ms=5000)


def test_pause_speculates_and_resume_voids_it() -> None:
    seg = Segmenter(SPECULATING)
    events = [e for i in range(15) for e in seg.process(frame(i), True)]  # 450 ms of speech
    assert [type(e) for e in events] == [Started]
    events = [e for i in range(15, 20) for e in seg.process(frame(i), False)]  # 150 ms of silence
    (paused,) = events
    assert isinstance(paused, Paused) and paused.speech_end_ms == 450.0
    assert [type(e) for e in seg.process(frame(20), True)] == [Resumed]  # the user goes on
    ends = [e for i in range(21, 41) for e in seg.process(frame(i), False)]
    assert any(isinstance(e, Paused) for e in ends) and isinstance(ends[-1], Ended)
    assert ends[-1].endpoint_ms == 41 * 30.0  # 600 ms after the last voiced frame


def test_quick_end_after_a_complete_transcript() -> None:
    seg = Segmenter(SPECULATING)
    for i in range(15):
        seg.process(frame(i), True)
    events = [e for i in range(15, 20) for e in seg.process(frame(i), False)]
    assert isinstance(events[-1], Paused)
    assert seg.quick_end() == []  # 150 ms of silence so far: not yet 300
    ends = [e for i in range(20, 30) for e in seg.process(frame(i), False)]
    assert isinstance(ends[-1], Ended) and ends[-1].endpoint_ms == 25 * 30.0  # 300 ms, not 600


def test_quick_end_without_a_pause_does_nothing() -> None:
    seg = Segmenter(SPECULATING)
    for i in range(15):
        seg.process(frame(i), True)
    assert seg.quick_end() == [] and seg.in_speech


def test_end_now_ends_a_paused_turn_at_once_and_nothing_else() -> None:
    seg = Segmenter(SPECULATING)
    for i in range(15):
        seg.process(frame(i), True)
    assert seg.end_now() == [] and seg.in_speech  # no pause yet: the user may be mid-word
    events = [e for i in range(15, 20) for e in seg.process(frame(i), False)]
    assert isinstance(events[-1], Paused)
    (ended,) = seg.end_now()
    assert isinstance(ended, Ended) and ended.endpoint_ms == 20 * 30.0 and not seg.in_speech
    assert seg.end_now() == []


def _level(amplitude: int) -> bytes:
    """One 30 ms frame of a 440 Hz tone (amplitude 0 to 32767)."""
    t = np.arange(480) / 16000
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


@pytest.mark.parametrize("fine", [True, False])
def test_the_fine_end_lies_where_the_sound_stops_not_where_the_vad_lets_go(fine: bool) -> None:
    """10 quiet frames, 12 loud ones, then 3 quiet ones that the VAD still calls speech (its
    overhang): speech ends at 660 ms, not at 750, and the end-of-turn silence counts from there
    (the pause, for ASR's sake, from the VAD's end)."""
    seg = Segmenter(replace(SPECULATING, fine_end=fine))
    quiet, loud = _level(40), _level(8000)
    frames = [(quiet, False)] * 10 + [(loud, True)] * 12 + [(quiet, True)] * 3 + [(quiet, False)] * 40
    events = [(i, e) for i, (pcm, voiced) in enumerate(frames) for e in seg.process(pcm, voiced)]
    (paused_at, paused), (ended_at, ended) = [(i, e) for i, e in events if isinstance(e, Paused | Ended)]
    end = 660.0 if fine else 750.0
    assert paused.speech_end_ms == end and isinstance(ended, Ended) and ended.speech_end_ms == end
    assert (paused_at + 1) * 30.0 == 750 + 150  # the pause: 150 ms after the VAD's end
    assert ended.endpoint_ms == end + 600
    assert len(ended.pcm) == 2 * 16 * (750 + 200)  # from 0 (the pre-roll) to the VAD's end + 200 ms


def test_the_fine_end_goes_back_no_further_than_max_lead() -> None:
    seg = Segmenter(replace(SPECULATING, fine_end=True))
    quiet, loud = _level(40), _level(8000)
    frames = [(quiet, False)] * 10 + [(loud, True)] * 12 + [(quiet, True)] * 10 + [(quiet, False)] * 40
    events = [e for pcm, voiced in frames for e in seg.process(pcm, voiced)]
    ended = events[-1]
    assert isinstance(ended, Ended) and ended.speech_end_ms == 32 * 30.0 - MAX_LEAD_MS


@pytest.mark.parametrize(("amplitude", "resumes"), [(60, False), (8000, True)])
def test_a_voiced_frame_in_the_silence_resumes_the_turn_only_when_loud_enough_to_be_speech(
    amplitude: int, resumes: bool
) -> None:
    """Noise before the speech, the speech, then silence in which webrtcvad calls one frame of
    the same noise speech (a crowd's murmur does): the silence goes on and the turn ends 600 ms
    after the speech; a frame as loud as the speech resumes it."""
    seg = Segmenter(replace(SPECULATING, fine_end=True))
    noise, loud = _level(40), _level(8000)
    frames = [(noise, False)] * 10 + [(loud, True)] * 12 + [(noise, False)] * 8
    frames += [(_level(amplitude), True)] + [(noise, False)] * 40
    counted = []
    events: Events = []
    for i, (pcm, voiced) in enumerate(frames):
        events += [(i, e) for e in seg.process(pcm, voiced)]
        counted.append(seg.voiced)
    ended = next(e for _, e in events if isinstance(e, Ended))
    assert isinstance(ended, Ended)
    assert any(isinstance(e, Resumed) for _, e in events) == resumes
    assert counted[30] == resumes  # the VAD stage counts the frame as the segmenter did
    assert ended.speech_end_ms == (31 * 30.0 if resumes else 660.0)
    assert ended.endpoint_ms == ended.speech_end_ms + 600


def test_digital_silence_leaves_the_vad_s_end() -> None:
    seg = Segmenter(replace(SPECULATING, fine_end=True))
    frames = [(bytes(960), True)] * 12 + [(bytes(960), False)] * 40
    ended = [e for pcm, voiced in frames for e in seg.process(pcm, voiced)][-1]
    assert isinstance(ended, Ended) and ended.speech_end_ms == 360.0


SPECULATE = replace(CONFIG, speculate_after_ms=120, max_utterance_ms=5000)


def _feed(seg: Segmenter, pattern: str, start: int) -> Events:
    return [(start + i, e) for i, f in enumerate(pattern) for e in seg.process(frame(start + i), f == "1")]


def test_the_wake_word_then_a_pause_is_not_speculated_on_and_not_a_turn() -> None:
    """The microphone is open (a follow-up): the wake word reaches the segmenter as speech; the
    detector fires 90 ms after it; the user pauses a second, then asks."""
    seg = Segmenter(SPECULATE)
    word = "1" * 20  # 600 ms of "okay nabu", frames 10-29
    events = _feed(seg, "0" * 10 + word + "00", 0)
    seg.wake_word(33 * 480)  # heard at frame 33 (the detector is sure after the word)
    events += _feed(seg, "0" * 33, 32)  # a second of silence, the mic open
    assert [type(e) for _, e in events] == [Started, Dropped]  # no Paused: nothing to speculate on
    dropped = only(events, Dropped)[0]
    assert isinstance(dropped, Dropped) and dropped.reason == "only the wake word"
    question = _feed(seg, "1" * 15 + "0" * 25, 65)
    assert [type(e) for _, e in question] == [Started, Paused, Ended]  # the question, as always


def test_a_speculation_on_the_wake_word_alone_is_void_when_the_detection_comes() -> None:
    seg = Segmenter(SPECULATE)
    events = _feed(seg, "0" * 10 + "1" * 20 + "0" * 6, 0)  # the pause reaches speculate_after_ms
    assert [type(e) for _, e in events] == [Started, Paused]
    assert [type(e) for e in seg.wake_word(34 * 480)] == [Resumed]  # the detector fired late
    more = _feed(seg, "0" * 4 + "1" * 12 + "0" * 25, 36)  # the question, in the same turn
    assert [type(e) for _, e in more] == [Paused, Ended]  # speculated once speech followed the word


def test_speech_just_after_the_detection_is_the_question() -> None:
    """No pause after the word: the detection falls inside the question's first word."""
    seg = Segmenter(SPECULATE)
    seg_events = _feed(seg, "0" * 10 + "1" * 20, 0)
    seg.wake_word(25 * 480)
    seg_events += _feed(seg, "1" * 20 + "0" * 25, 30)
    assert [type(e) for _, e in seg_events] == [Started, Paused, Ended]
    ended = only(seg_events, Ended)[0]
    assert isinstance(ended, Ended) and first_frame_of(ended.pcm) == 0  # one turn, from the pre-roll
