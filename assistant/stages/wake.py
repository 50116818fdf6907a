"""The wake word gate, in front of the VAD: ``AudioIn`` in, ``AudioIn`` out (silence until woken).

With ``listen.mode = "wake"`` and the ``micro`` engine, a wake word detector (``wake.WakeDetector``)
hears every microphone frame. Until it hears its word, the VAD gets silence of the same length
(its timeline goes on, no turn starts, and nothing is transcribed). The stage holds the last
``HOLD_MS`` of audio back while asleep, so that when the word is heard it can hand the VAD the
audio from where the word ended (``wake.word_end``: the pause after the word where one begins
within ``wake.GAP_AFTER_MS`` of the detection, which the stage waits for; else the last quiet
moment shortly before the detection) and the question's first syllable is kept whether or not
the user paused after the word. From then on audio passes as it comes: the gate stays open

- for ``LISTEN_AFTER_WAKE_S`` after the word (the question may take a moment to begin),
- while a turn is in flight (the controller's state is not idle: listening, thinking, speaking;
  so speech over a reply still barges in), and
- for ``listen.follow_up_s`` after that (a follow-up question needs no wake word),

then closes again (the VAD waits ``HOLD_MS`` once, as the stage starts holding audio back). A
wake word said while the gate is open reaches the VAD (Whisper tiny.en writes "okay nabu" as
"Okay, now move" and the like, which no phrase matching removes): ``WakeTrimStage``, after the
VAD, silences what precedes the end of the word in the utterance that holds it, found there by
the first ``MARK_MS`` of sound after the word.

A detection is reported to the controller (``WakeHeard``: it publishes ``WakeDetected``, MQTT
``wake``, and the state ``listening`` when the assistant was idle) and sent on to the VAD in the
stream (``WakeWordHeard``: speech before it is the word, never a question to speculate on); when
the gate closes again the controller hears ``WakeClosed`` (``idle`` if no question came). With
``listen.wake_earcon`` a short tone plays (it is heard by the microphone too: off by default).
While muted the detector hears silence.

The stop word (``listen.stop_word``): while the speaker plays (an alarm rings, a reply plays) and
for ``STOP_LISTEN_S`` after, the gate is open too, though not *awake*: the controller answers
nothing that began then (``TurnController`` asks ``awake`` when speech begins), but ASR hears a
short utterance, and "stop" stops what plays (``stages/asr.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import replace
from typing import Protocol

import numpy as np

from assistant.config import ListenConfig
from assistant.contracts import Synthesizer
from assistant.events import State
from assistant.messages import SAMPLE_RATE, AudioIn, Message, SpeechSoFar, Utterance, WakeWordHeard
from assistant.stages.base import Queue, run_inbox
from assistant.turn.reports import TurnChannel, WakeClosed, WakeHeard
from assistant.wake import GAP_AFTER_MS, GAP_SEARCH_MS, Detection, WakeDetector, earcon, word_end

_LOGGER = logging.getLogger(__name__)

HOLD_MS = 600
"""Audio held back while asleep, in ms: enough to reach back to where the wake word ended
(``wake.GAP_SEARCH_MS``) from ``wake.GAP_AFTER_MS`` after the detection."""
LISTEN_AFTER_WAKE_S = 5.0
"""Seconds after the wake word during which the question may begin."""
RECENT_MS = 1000
"""Audio kept to look back into: for the end of a wake word, and for what follows it."""
MARK_MS = 300
"""Length of the audio after a wake word by which ``trim`` finds it in an utterance."""
STOP_LISTEN_S = 2.0
"""Seconds after the speaker last played during which the gate stays open for the stop word."""


class Notices(Protocol):
    async def play_notice(self, pcm: bytes, rate: int) -> None:
        """Play audio that belongs to no turn."""


class WakeHost(Protocol):
    """What the stage reads of the turn controller."""

    @property
    def state(self) -> State: ...

    @property
    def playing(self) -> bool:
        """The speaker is playing (a reply, an alarm)."""
        ...

    @property
    def muted(self) -> bool: ...

    @property
    def output(self) -> Notices | None: ...

    @property
    def tts(self) -> Synthesizer | None: ...


class WakeStage:
    """Gates the microphone on a wake word detector."""

    name = "wake"

    def __init__(
        self, detector: WakeDetector, config: ListenConfig, channel: TurnChannel, host: WakeHost
    ) -> None:
        assert GAP_SEARCH_MS[0] + GAP_AFTER_MS < HOLD_MS
        self.detector = detector
        self.config = config
        self.channel = channel
        self.host = host
        self._held: deque[AudioIn] = deque()
        self._held_samples = 0
        self._hold = SAMPLE_RATE * HOLD_MS // 1000
        self._pos = 0
        """Samples seen so far (the detector has heard every one of them)."""
        self._origin_ms: float | None = None
        self._recent = bytearray()
        """The last ``RECENT_MS`` of audio."""
        self._pending: list[int] = []
        """Where recent wake words ended (samples), until ``MARK_MS`` of sound has followed."""
        self._marks: deque[bytes] = deque(maxlen=4)
        """The first ``MARK_MS`` of sound after each recent wake word: ``trim`` finds it in an
        utterance and silences what came before it."""
        self._open_until = 0
        """The gate stays open until this sample (at least)."""
        self._stop_until = 0
        """The gate stays open for the stop word until this sample (``listen.stop_word``)."""
        self._was_open = False
        self._placing: list[tuple[int, bool]] = []
        """Detections whose word's end is not placed yet: (sample, it woke the gate from sleep)."""
        self._heard: list[float] = []
        """Where wake words were heard (ms) that the VAD has not been told of yet."""
        self._busy = False
        self._earcons: set[asyncio.Task[None]] = set()
        self.detections = 0
        """Wake words heard."""
        self.woken = 0
        """Detections that opened a closed gate."""
        self.trimmed = 0
        """Utterances whose start (a wake word said while the gate was open) was silenced."""
        detector.reset()

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        async def handle(item: Message) -> None:
            if not isinstance(item, AudioIn):
                await outbox.put(item)
                return
            for message in self.feed(item):
                await outbox.put(message)

        async def on_end() -> None:
            cut = self._place_cuts(final=True)
            for piece in [*self._release(cut), *(WakeWordHeard(at_ms) for at_ms in self._heard)]:
                await outbox.put(piece)
            for task in self._earcons:
                task.cancel()

        await run_inbox(inbox, outbox, self.channel, handle, on_end, stage=self.name)

    def reconfigure(self, config: ListenConfig) -> None:
        """New ``[listen]`` keys, the threshold among them (the model itself needs a restart)."""
        if config.wake_model != self.config.wake_model:
            _LOGGER.warning("listen.wake_model changed: restart to load %s", config.wake_model)
        self.config = replace(config, wake_model=self.config.wake_model)
        self.detector.threshold = config.wake_threshold or self.detector.default_threshold

    @property
    def awake(self) -> bool:
        """The gate is open for a question: after the wake word, while a turn is in flight, for
        a follow-up (not only for the stop word)."""
        return self.config.mode != "wake" or self._busy or self._pos < self._open_until

    @property
    def listening(self) -> bool:
        """The gate is open: audio passes to the VAD."""
        return self.awake or self._pos < self._stop_until

    def feed(self, item: AudioIn) -> list[Message]:
        """One piece of microphone audio in; what the VAD gets now (possibly nothing, while the
        stage holds audio back): audio, and where a wake word was heard."""
        muted = self.host.muted
        detections = self.detector.process(bytes(len(item.pcm)) if muted else item.pcm)
        self._origin_ms = item.start_ms if self._origin_ms is None else self._origin_ms
        self._pos += len(item.pcm) // 2
        self._recent += item.pcm
        del self._recent[: max(0, len(self._recent) - 2 * SAMPLE_RATE * RECENT_MS // 1000)]
        self._take_marks()
        busy = self.host.state not in (State.IDLE, State.WAITING_FOR_DEVICE)
        if self._busy and not busy:  # a turn has ended: follow-ups need no wake word for a while
            self._open_until = max(self._open_until, self._pos + int(self.config.follow_up_s * SAMPLE_RATE))
        if self.config.stop_word and self.host.playing:
            self._stop_until = self._pos + int(STOP_LISTEN_S * SAMPLE_RATE)
        was_open = self.listening
        self._busy = busy
        self._held.append(item)
        self._held_samples += len(item.pcm) // 2
        for detection in detections:
            self._woken(detection, was_open)
        cut = self._place_cuts()
        out: list[Message] = []
        if any(closed for _, closed in self._placing):
            pass  # woken from sleep: hold on until the end of the word is placed
        elif self.listening:
            out += self._release(cut, open_=True)
        else:
            while self._held and self._held_samples - len(self._held[0].pcm) // 2 >= self._hold:
                oldest = self._held.popleft()
                self._held_samples -= len(oldest.pcm) // 2
                out.append(replace(oldest, pcm=bytes(len(oldest.pcm))))
        if self._was_open and not self.listening:
            self.channel.report(WakeClosed())
        self._was_open = self.listening
        if not any(closed for _, closed in self._placing):  # the VAD hears of it after the audio
            out += [WakeWordHeard(at_ms) for at_ms in self._heard]
            self._heard.clear()
        return out

    def _woken(self, detection: Detection, was_open: bool) -> None:
        """The wake word was heard: tell the controller, keep the gate open; where the word ended
        is placed once ``GAP_AFTER_MS`` more audio has come (``_place_cuts``)."""
        self.detections += 1
        self.woken += not was_open
        at = detection.at_sample
        self._open_until = max(self._open_until, at + int(LISTEN_AFTER_WAKE_S * SAMPLE_RATE))
        self._placing.append((at, not was_open))
        at_ms = (self._origin_ms or 0.0) + at * 1000 / SAMPLE_RATE
        word, model = self.detector.wake_word, self.detector.name
        self.channel.report(WakeHeard(word, model, at_ms, detection.probability))
        self._heard.append(at_ms)
        host = self.host
        if self.config.wake_earcon and host.output is not None:
            rate = host.tts.sample_rate if host.tts is not None else 22_050
            task = asyncio.get_running_loop().create_task(
                host.output.play_notice(earcon(rate), rate), name="earcon"
            )
            self._earcons.add(task)
            task.add_done_callback(self._earcons.discard)

    def _place_cuts(self, *, final: bool = False) -> int | None:
        """Place where each recent wake word ended, once ``GAP_AFTER_MS`` of audio has followed its
        detection (or the input has ended): the first ``MARK_MS`` of sound after it mark it for
        ``trim``. Returns the end of a word that woke the gate from sleep (the question starts
        there), or None."""
        after = SAMPLE_RATE * GAP_AFTER_MS // 1000
        recent_from = self._pos - len(self._recent) // 2
        cut: int | None = None
        for at, closed in list(self._placing):
            if self._pos < at + after and not final:
                continue
            self._placing.remove((at, closed))
            start = max(recent_from, at - SAMPLE_RATE * GAP_SEARCH_MS[0] // 1000)
            stop = min(self._pos, at + after)
            end = start + word_end(
                bytes(self._recent[2 * (start - recent_from) : 2 * (stop - recent_from)]), at - start
            )
            self._pending.append(end)
            origin = self._origin_ms or 0.0
            _LOGGER.info(
                "wake word %r heard at %.0f ms; the question starts at %.0f ms",
                self.detector.wake_word, origin + at / 16, origin + end / 16,
            )  # fmt: skip
            if closed:
                cut = end
        self._take_marks()
        return cut

    def _take_marks(self) -> None:
        """Keep the first ``MARK_MS`` of sound after each pending wake word, once it has come."""
        recent_from = self._pos - len(self._recent) // 2
        size = SAMPLE_RATE * MARK_MS // 1000
        for cut in list(self._pending):
            after = np.frombuffer(self._recent, dtype="<i2")[max(0, cut - recent_from) :]
            sounding = np.flatnonzero(after)
            if cut < recent_from:
                self._pending.remove(cut)  # nothing but silence followed it for a second
            elif sounding.size and after.size - sounding[0] >= size:
                self._marks.append(after[sounding[0] : sounding[0] + size].tobytes())
                self._pending.remove(cut)

    def trim(self, utterance: Utterance | SpeechSoFar) -> Utterance | SpeechSoFar:
        """``utterance`` (or the utterance so far) with whatever came before the end of a wake word
        in it silenced (the user said the word while the microphone was open: in a follow-up, over
        a reply)."""
        pcm = utterance.pcm
        for mark in reversed(self._marks):
            at = pcm.find(mark)
            while at > 0 and at % 2:  # a whole sample's boundary only
                at = pcm.find(mark, at + 1)
            if at > 0:
                self.trimmed += isinstance(utterance, Utterance)
                return replace(utterance, pcm=bytes(at) + pcm[at:])
        return utterance

    def _release(self, cut: int | None, *, open_: bool = False) -> list[AudioIn]:
        """Hand on everything held: as it is from ``cut`` on (None: all of it when ``open_``,
        else none of it), as silence before."""
        position = self._pos - self._held_samples
        if cut is None:
            cut = position if open_ else self._pos
        out: list[AudioIn] = []
        for item in self._held:
            size = len(item.pcm) // 2
            keep = min(size, max(0, position + size - cut))
            pcm = item.pcm if keep == size else bytes(2 * (size - keep)) + item.pcm[2 * (size - keep) :]
            out.append(item if pcm is item.pcm else replace(item, pcm=pcm))
            position += size
        self._held.clear()
        self._held_samples = 0
        return out


class WakeTrimStage:
    """After the VAD: silences the wake word at the start of an utterance heard while the gate was
    open (``WakeStage.trim``), so that ASR hears only the question."""

    name = "wake_trim"

    def __init__(self, gate: WakeStage, channel: TurnChannel) -> None:
        self.gate = gate
        self.channel = channel

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        async def handle(item: Message) -> None:
            await outbox.put(self.gate.trim(item) if isinstance(item, Utterance | SpeechSoFar) else item)

        await run_inbox(inbox, outbox, self.channel, handle, stage=self.name)
