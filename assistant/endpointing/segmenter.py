"""A clock-free endpointer: VAD decisions in, turn boundaries out.

In the spirit of Home Assistant's ``assist_pipeline/vad.py::VoiceCommandSegmenter``: no clock
inside, every position is counted from the samples fed so far (ms on the input timeline, 0 at
the first frame), so tests are exact and deterministic.

Feed it one whole VAD frame at a time with the VAD's verdict::

    seg = Segmenter(VadConfig())
    for frame, voiced in frames:
        for event in seg.process(frame, voiced):
            ...
    events = seg.finish()

States and rules:

- *listening*: a turn starts (``Started``) once ``start_ms`` worth of voiced frames lie within a
  window of twice that length and the current frame is voiced, so an isolated click (one or two
  voiced frames) does not start a turn. The turn's speech starts at the window's first voiced
  frame; its audio begins up to ``preroll_ms`` before that (less at the very start of input).
- *in speech*: the turn ends (``Ended``) once ``end_silence_ms`` of non-speech follows the last
  voiced frame (``endpoint_ms`` is the end of the frame that completed the silence), or it is
  cut (``Ended(truncated=True)``) once ``max_utterance_ms`` have passed since its first voiced
  frame. A turn with less than ``min_speech_ms`` of voiced frames is ``Dropped`` instead.
  The audio ends at the last voiced frame plus up to ``tail_ms`` (200 ms) of what followed, so
  ASR hears the natural decay of the last word but not the whole end-of-turn silence.
- *speculation*: with ``speculate_after_ms`` set, once that much silence follows enough speech,
  ``Paused`` carries the utterance so far, so ASR and the LLM can start before the endpoint;
  if speech comes back, ``Resumed`` says the speculation is void. ``quick_end()`` (called when
  the speculative transcript looks like a complete sentence) shortens the end-of-turn silence to
  ``quick_end_silence_ms`` (adaptive endpointing).
- *the fine end*: with ``fine_end`` on, the end of speech is placed inside the last voiced frames
  by a 10 ms energy envelope (``envelope.Envelope``): webrtcvad calls a word's decay speech, so
  its last voiced frame ends some tens of ms after the speaker stopped. The end-of-turn silences
  (``quick_end_silence_ms``, ``end_silence_ms``) are counted from that finer end, and
  ``speech_end_ms`` reports it; the pause (``speculate_after_ms``) still counts from the VAD's
  end, so ASR hears the same audio, and the audio runs to the VAD's end plus the tail.
  In that silence, a frame webrtcvad calls speech resumes the turn only if it is as loud as the
  envelope wants speech to be (``Envelope.latest_loud``, on the frame's mean power): webrtcvad
  takes a crowd's murmur for speech, and a murmur of babble 300 ms after a question used to
  resume the turn and move its end (and the budget's clock) 300 ms past where the speaker stopped.
- *sure end*: ``end_now()`` (called when the speculative transcript is a recognised command)
  ends a paused turn at once.
- *the semantic end*: at a pause, two judges may say whether the turn is over: the speculative
  transcript (``heard(kind)``: ``finished`` when it reads as a finished sentence, ``question``
  when that sentence ends in ``?``, ``open`` when it ends on a word that leaves it open: "the",
  "for", "of"..., else ``unsure``; ``quick_end()`` is ``heard("finished")``) and the turn model on
  the audio (``turn_verdict(complete)``). The silence that ends the paused turn is then:

  ==========================  ========================================================
  transcript open             ``hold_silence_ms`` (whatever the model says)
  model complete              ``agreed_end_silence_ms`` when the transcript reads finished
                              too, ``quick_end_silence_ms`` when it is unsure;
                              ``end_silence_ms`` until it is in
  model incomplete            ``quick_end_silence_ms`` for a question, ``end_silence_ms``
                              for a finished statement, else ``hold_silence_ms``
  verdict due, not in yet     ``quick_end_silence_ms`` for a question, else
                              ``end_silence_ms`` until it is in
  no model verdict            ``quick_end_silence_ms`` when the transcript reads finished,
                              else ``end_silence_ms`` (the transcript heuristic alone)
  ==========================  ========================================================

  The model alone never ends a turn sooner than the transcript allows: on synthetic voices it
  calls many cut-off sentences complete ("Set a timer for"), which only the words show. A
  verdict that asks for less silence than has already passed ends the turn at once. Each judge
  speaks for the current pause only: when speech resumes, both are forgotten.
- *the wake word* (``wake_word(position)``, where a wake word model fired): speech before that
  point is the word, or what is left of it, never a question. A turn is not speculated on until
  ``min_speech_ms`` (at least a frame) of voiced audio has followed the point; a speculation made
  before the point arrives (the detector fires up to a quarter second after the word) is made
  void (``Resumed``); a turn that ends with no such speech after it is ``Dropped``.
- *waiting for silence*: after a cut, no new turn starts until ``end_silence_ms`` of continuous
  non-speech has been seen. Endless speech-like input (TV, noise) thus gives one truncated
  utterance and then nothing until it pauses.

``finish()`` at end of input ends an open turn with its endpoint at the end of input (or drops
it when it has too little speech). Frames of a partly filled start window are forgotten.

The events (``Started``, ``Paused``, ``Resumed``, ``Ended``, ``Dropped``) are declared in
``endpointing/boundaries.py``; this module imports them, so they can be named from here too.
"""

from __future__ import annotations

import math
from collections import deque

from assistant.config import VadConfig
from assistant.endpointing.boundaries import Dropped, Ended, Paused, Resumed, SegmenterEvent, Started
from assistant.endpointing.continuation import LastTurn
from assistant.endpointing.envelope import Envelope
from assistant.messages import SAMPLE_RATE

TAIL_MS = 200
"""Default trailing audio kept after the last voiced frame, in ms."""
TRANSCRIPT_KINDS = ("finished", "question", "open", "unsure")
"""What a speculative transcript may say of the turn (``Segmenter.heard``)."""


_LISTENING, _SPEECH, _WAIT_SILENCE = "listening", "speech", "wait_silence"


class Segmenter:
    """Turns a stream of (frame, is_speech) into ``Started``/``Ended``/``Dropped`` events."""

    def __init__(self, config: VadConfig, *, tail_ms: int = TAIL_MS) -> None:
        self.config = config
        self.frame_samples = SAMPLE_RATE * config.frame_ms // 1000
        """Samples per frame."""
        self.frame_bytes = 2 * self.frame_samples
        """Bytes per frame (int16)."""
        frames = self._frames
        self._start_frames = frames(config.start_ms)
        self._end_frames = frames(config.end_silence_ms)
        self._preroll_frames = frames(config.preroll_ms)
        self._tail_samples = SAMPLE_RATE * tail_ms // 1000
        self._window: deque[bool] = deque(maxlen=2 * self._start_frames)
        self._history: deque[bytes] = deque(maxlen=self._preroll_frames + 2 * self._start_frames)
        self._state = _LISTENING
        self._frame_index = 0
        """Frames processed so far (the next frame's index)."""
        self._buffer = bytearray()
        self._buffer_start = 0  # samples, input position of self._buffer[0]
        self._speech_start = 0  # samples, first voiced frame
        self._speech_end = 0  # samples, end of the last voiced frame
        self._voiced_frames = 0
        self._silent_frames = 0
        self._lead = 0  # samples between the fine end of speech and the VAD's, in the current silence
        self._envelope = Envelope()
        self._loud: float | None = None
        """The level a frame in the current silence must reach to resume the turn (None: any)."""
        self.voiced = False
        """The last frame counted as speech (the VAD's verdict, unless too quiet to resume a turn)."""
        self._pause_frames = frames(config.speculate_after_ms) if config.speculate_after_ms else 0
        self._quick_frames = frames(config.quick_end_silence_ms)
        self._agreed_frames = frames(min(config.agreed_end_silence_ms, config.quick_end_silence_ms))
        self._hold_frames = frames(max(config.hold_silence_ms, config.end_silence_ms))
        self._paused = False
        self._heard: str | None = None
        """What the transcript of this pause says (``TRANSCRIPT_KINDS``), or None: nothing yet."""
        self._complete: bool | None = None
        """What the turn model says of this pause (None: nothing yet, or no model)."""
        self.verdict_due = False
        """The turn model was asked about this pause (set by the caller): a finished statement waits
        for its verdict. Whisper reads the first half of a paused request as a finished sentence
        ("Set a tie with four."), which only the audio can overrule."""
        self.wake_end = -1
        """Samples: where the latest wake word was heard (-1: none)."""
        self._voiced_after = 0
        """Voiced frames of the open turn that start at or after ``wake_end``."""
        self._recent: deque[tuple[int, bool]] = deque(maxlen=16)
        """(start sample, voiced) of the last frames of the open turn."""
        window_samples = 2 * self._start_frames * self.frame_samples
        self._last = LastTurn(SAMPLE_RATE * config.continue_ms // 1000, window_samples)
        """The last ended turn, while new speech may continue it."""
        self._resumed_ms: float | None = None
        """In a turn that continues an ended one: the new speech's first voiced frame (ms)."""
        self._resumed_at = 0
        """...and the byte in the turn's audio where the new speech's audio begins."""

    def _frames(self, ms: int) -> int:
        """Whole frames covering at least ``ms`` (at least one)."""
        return max(1, math.ceil(ms / self.config.frame_ms))

    @property
    def in_speech(self) -> bool:
        """True between ``Started`` and the turn's ``Ended``/``Dropped``."""
        return self._state == _SPEECH

    @property
    def listening(self) -> bool:
        """True while a voiced frame may start a turn (not in speech, and not waiting for
        silence after a turn cut at ``max_utterance_ms``)."""
        return self._state == _LISTENING

    @property
    def audio_so_far(self) -> bytes:
        """The open turn's audio so far, from the first sample its utterance will have; empty
        outside a turn."""
        return bytes(self._buffer) if self._state == _SPEECH else b""

    @property
    def frames_done(self) -> int:
        """Frames processed so far (a replacement segmenter continues the count)."""
        return self._frame_index

    @frames_done.setter
    def frames_done(self, value: int) -> None:
        self._frame_index = value

    @property
    def position_ms(self) -> float:
        """Input-timeline position after the frames processed so far, in ms."""
        return _ms(self._frame_index * self.frame_samples)

    def process(self, frame_pcm: bytes, is_speech: bool) -> list[SegmenterEvent]:
        """Feed one whole frame and the VAD's verdict on it; return what happened."""
        if len(frame_pcm) != self.frame_bytes:
            raise ValueError(f"frame is {len(frame_pcm)} bytes; expected {self.frame_bytes}")
        index = self._frame_index
        self._frame_index += 1
        frame_end = self._frame_index * self.frame_samples
        self.voiced = is_speech
        if self._state == _SPEECH:
            return self._continue(frame_pcm, is_speech, frame_end)
        self._history.append(frame_pcm)
        self._last.push(frame_pcm, frame_end)
        if self._state == _WAIT_SILENCE:
            self._silent_frames = 0 if is_speech else self._silent_frames + 1
            if self._silent_frames >= self._end_frames:
                self._state = _LISTENING
                self._window.clear()
            return []
        self._window.append(is_speech)
        if not is_speech or sum(self._window) < self._start_frames:
            return []
        return self._start(index)

    def wake_word(self, position: int) -> list[SegmenterEvent]:
        """A wake word was heard at sample ``position``: what precedes it is the word. A
        speculation on the open turn with no speech after it is void (``Resumed``)."""
        self.wake_end = position
        if self._state != _SPEECH:
            self._last.forget()  # what follows a wake word is a new request
            return []
        self._voiced_after = sum(voiced for start, voiced in self._recent if start >= position)
        if self._paused and not self._question_heard():
            self._paused = False
            self._heard = self._complete = None
            self.verdict_due = False
            return [Resumed()]
        return []

    def _question_heard(self) -> bool:
        """Enough speech after the latest wake word (or no wake word in the turn)."""
        if self._speech_start >= self.wake_end:
            return True
        needed = max(self.config.min_speech_ms, self.config.frame_ms)
        return self._voiced_after * self.config.frame_ms >= needed

    def finish(self) -> list[SegmenterEvent]:
        """End of input: end or drop an open turn (endpoint at the end of input); reset."""
        events = self._end(truncated=False, judged="end of input") if self._state == _SPEECH else []
        self._state = _LISTENING
        self._window.clear()
        self._history.clear()
        self._last.forget()
        return events

    def forget_last(self) -> None:
        """The last turn stands alone: speech after it starts a new turn, whenever it comes."""
        self._last.forget()

    def _start(self, index: int) -> list[SegmenterEvent]:
        window = list(self._window)
        first_voiced = index - len(window) + 1 + window.index(True)
        history_first = index - len(self._history) + 1
        first_kept = max(first_voiced - self._preroll_frames, history_first)
        self._buffer = bytearray(b"".join(list(self._history)[first_kept - history_first :]))
        self._buffer_start = first_kept * self.frame_samples
        self._speech_start = first_voiced * self.frame_samples
        self._speech_end = (index + 1) * self.frame_samples
        self._voiced_frames = sum(window[window.index(True) :])
        continued = self._last.take(self._speech_start, self._speech_end)
        self._resumed_ms, self._resumed_at = None, 0
        if continued is not None:  # the last turn's audio, the pause, and this speech
            self._resumed_ms = _ms(self._speech_start)
            self._resumed_at = 2 * (self._buffer_start - continued.buffer_start)
            self._buffer = continued.buffer
            self._buffer_start, self._speech_start = continued.buffer_start, continued.speech_start
            self._voiced_frames += continued.voiced_frames
        first = index - len(window) + 1
        self._recent.clear()
        self._recent.extend(((first + i) * self.frame_samples, v) for i, v in enumerate(window))
        self._voiced_after = sum(v for start, v in self._recent if start >= self.wake_end)
        self._silent_frames = self._lead = 0
        if self.config.fine_end:
            self._envelope.reset(bytes(self._buffer), self._buffer_start)
        self._state = _SPEECH
        self._window.clear()
        self._history.clear()
        return [Started(start_ms=_ms(self._speech_start), continues=continued is not None)]

    def quick_end(self, *, question: bool = False) -> list[SegmenterEvent]:
        """The transcript so far reads as a finished sentence (``question``: one ending in ``?``):
        end the turn after ``quick_end_silence_ms`` of silence instead of ``end_silence_ms``
        (adaptive endpointing), unless the turn model says otherwise (see the module's table).
        If that much silence has already passed, the turn ends now. Applies until speech resumes."""
        return self.heard("question" if question else "finished")

    def heard(self, kind: str) -> list[SegmenterEvent]:
        """What the transcript so far says: ``finished``, ``question``, ``open`` or ``unsure``
        (see the module's table). Applies until speech resumes."""
        if kind not in TRANSCRIPT_KINDS:
            raise ValueError(f"transcript kind {kind!r}: choose one of {TRANSCRIPT_KINDS}")
        return self._judged(heard=kind)

    def turn_verdict(self, complete: bool) -> list[SegmenterEvent]:
        """The turn model's verdict on the paused utterance (see the module's table). Applies
        until speech resumes."""
        return self._judged(complete=complete)

    def _judged(self, *, heard: str | None = None, complete: bool | None = None) -> list[SegmenterEvent]:
        if self._state != _SPEECH or not self._paused:
            return []
        self._heard = heard or self._heard
        self._complete = self._complete if complete is None else complete
        if self._silence_reaches(self._needed_frames()):
            return self._end(truncated=False)
        return []

    def _needed_frames(self) -> int:
        """The end-of-turn silence the judges of this pause ask for, in frames."""
        heard, complete = self._heard, self._complete
        if heard == "open":
            return self._hold_frames
        if complete is None:
            quick = heard == "question" or (heard == "finished" and not self.verdict_due)
            return self._quick_frames if quick else self._end_frames
        if complete:
            if heard in ("finished", "question"):
                return self._agreed_frames
            return self._end_frames if heard is None else self._quick_frames
        if heard == "question":
            return self._quick_frames
        return self._end_frames if heard == "finished" else self._hold_frames

    def end_now(self) -> list[SegmenterEvent]:
        """The speech so far is surely a whole turn (a recognised command): end a paused turn now.
        Nothing happens once speech has resumed."""
        if self._state != _SPEECH or not self._paused:
            return []
        return self._end(truncated=False, judged="command")

    def _silence_reaches(self, frames: int) -> bool:
        """True once the silence since the (fine) end of speech lasts ``frames`` frames."""
        return self._silent_frames * self.frame_samples + self._lead >= frames * self.frame_samples

    @property
    def _fine_end(self) -> int:
        return self._speech_end - self._lead

    def _continue(self, frame_pcm: bytes, is_speech: bool, frame_end: int) -> list[SegmenterEvent]:
        self._buffer += frame_pcm
        if self.config.fine_end:
            self._envelope.push(frame_pcm)
        events: list[SegmenterEvent] = []
        frame_start = frame_end - self.frame_samples
        if is_speech and self._silent_frames and self._loud is not None:
            is_speech = self.voiced = self._envelope.latest_loud(self.frame_samples, self._loud)
        self._recent.append((frame_start, is_speech))
        if is_speech:
            self._voiced_frames += 1
            self._voiced_after += frame_start >= self.wake_end
            self._silent_frames = self._lead = 0
            self._speech_end = frame_end
            if self._paused:
                self._paused = False
                self._heard = self._complete = None
                self.verdict_due = False
                events.append(Resumed())
        else:
            self._silent_frames += 1
            if self._silent_frames == 1 and self.config.fine_end:
                self._loud = self._envelope.threshold(self._speech_start, self._speech_end)
                fine = self._envelope.speech_end(self._speech_start, self._speech_end, self._loud)
                self._lead = self._speech_end - max(fine, self._speech_start)
            end_frames = self._needed_frames() if self._paused else self._end_frames
            if self._silence_reaches(end_frames):
                return self._end(truncated=False)
            # the pause counts from the VAD's end: ASR then hears what follows the last sound (a
            # weak final "s" that the fine end may place itself before)
            if self._silent_frames == self._pause_frames and self._enough_speech() and self._question_heard():
                self._paused = True
                events.append(self._pause())
        if _ms(frame_end - self._speech_start) >= self.config.max_utterance_ms:
            return events + self._end(truncated=True)
        return events

    def _enough_speech(self) -> bool:
        return self._voiced_frames * self.config.frame_ms >= self.config.min_speech_ms

    def _pause(self) -> Paused:
        end = min(self._speech_end + self._tail_samples, self._frame_index * self.frame_samples)
        return Paused(
            pcm=bytes(self._buffer[: 2 * (end - self._buffer_start)]),
            speech_start_ms=_ms(self._speech_start),
            speech_end_ms=_ms(self._fine_end),
            resumed_ms=self._resumed_ms,
            resumed_at=self._resumed_at,
        )

    def _judges(self) -> str:
        """The judges of the current pause, as ``Ended.judged`` reports them."""
        model = {None: "none", True: "complete", False: "incomplete"}[self._complete]
        return f"transcript {self._heard or 'none'}, model {model}"

    def _end(self, *, truncated: bool, judged: str = "") -> list[SegmenterEvent]:
        """Close the open turn at the current position."""
        judged = "max_utterance_ms" if truncated else judged or self._judges()
        self._state = _WAIT_SILENCE if truncated else _LISTENING
        fine_end = self._fine_end
        self._silent_frames = self._lead = 0
        self._paused = False
        self._heard = self._complete = None
        self.verdict_due = False
        self._window.clear()
        buffer, self._buffer = self._buffer, bytearray()
        voiced_ms = float(self._voiced_frames * self.config.frame_ms)
        if voiced_ms < self.config.min_speech_ms:
            reason = f"too little speech: {voiced_ms:g} ms < {self.config.min_speech_ms} ms"
            return [Dropped(reason=reason, voiced_ms=voiced_ms)]
        if not self._question_heard():
            return [Dropped(reason="only the wake word", voiced_ms=voiced_ms)]
        end = min(self._speech_end + self._tail_samples, self._frame_index * self.frame_samples)
        pcm = bytes(buffer[: 2 * (end - self._buffer_start)])
        if not truncated:
            self._last.ended(buffer, self._buffer_start, self._speech_start, fine_end, self._voiced_frames)
        return [
            Ended(
                pcm=pcm,
                speech_start_ms=_ms(self._speech_start),
                speech_end_ms=_ms(fine_end),
                endpoint_ms=self.position_ms,
                truncated=truncated,
                judged=judged,
                resumed_ms=self._resumed_ms,
                resumed_at=self._resumed_at,
            )
        ]


def _ms(samples: int) -> float:
    """Samples at 16 kHz to ms."""
    return samples * 1000 / SAMPLE_RATE
