"""The wake word gate, in front of the VAD: ``AudioIn`` in, ``AudioIn`` out (silence until woken).

With ``listen.mode = "wake"`` and the ``micro`` engine, a wake word detector (``wake.WakeDetector``)
hears every microphone frame. Until it hears its word, the VAD gets silence of the same length
(its timeline goes on, no turn starts, and nothing is transcribed). The stage holds the last
``HOLD_MS`` of audio back while asleep, so that when the word is heard it can hand the VAD the
audio from where the word ended (``wake.word_gap``: the last quiet moment shortly before the
detection) and the question's first syllable is kept whether or not the user paused after the
word. From then on audio passes as it comes: the gate stays open

- for ``LISTEN_AFTER_WAKE_S`` after the word (the question may take a moment to begin),
- while a turn is in flight (the controller's state is not idle: listening, thinking, speaking;
  so speech over a reply still barges in), and
- for ``listen.follow_up_s`` after that (a follow-up question needs no wake word),

then closes again (the VAD waits ``HOLD_MS`` once, as the stage starts holding audio back). A
detection publishes ``WakeDetected`` (MQTT ``wake``), and ``StateChanged(listening)`` when the
assistant was idle; with ``listen.wake_earcon`` a short tone plays (it is heard by the
microphone too: off by default). While muted the detector hears silence.

The controller's own state does not change on a detection (it does when the question's speech
starts): the ``listening`` published here is for observers, and the next change the controller
makes is published as usual.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import replace
from typing import Protocol

from assistant.config import ListenConfig
from assistant.contracts import Synthesizer
from assistant.events import EventBus, State, StateChanged, WakeDetected
from assistant.messages import SAMPLE_RATE, AudioIn, Message
from assistant.stages.base import Queue, run_inbox
from assistant.turn.reports import TurnChannel
from assistant.wake import GAP_SEARCH_MS, Detection, WakeDetector, earcon, word_gap

_LOGGER = logging.getLogger(__name__)

HOLD_MS = 400
"""Audio held back while asleep, in ms: enough to reach back to where the wake word ended
(``wake.GAP_SEARCH_MS``)."""
LISTEN_AFTER_WAKE_S = 5.0
"""Seconds after the wake word during which the question may begin."""


class Notices(Protocol):
    async def play_notice(self, pcm: bytes, rate: int) -> None:
        """Play audio that belongs to no turn."""


class WakeHost(Protocol):
    """What the stage reads of the turn controller."""

    @property
    def events(self) -> EventBus: ...

    @property
    def state(self) -> State: ...

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
        assert GAP_SEARCH_MS[0] <= HOLD_MS
        self.detector = detector
        self.config = config
        self.channel = channel
        self.host = host
        self._held: deque[AudioIn] = deque()
        self._held_samples = 0
        self._hold = SAMPLE_RATE * HOLD_MS // 1000
        self._pos = 0
        """Samples seen so far (the detector has heard every one of them)."""
        self._open_until = 0
        """The gate stays open until this sample (at least)."""
        self._busy = False
        self._earcons: set[asyncio.Task[None]] = set()
        self.detections = 0
        """Wake words heard."""
        self.woken = 0
        """Detections that opened a closed gate."""
        detector.reset()

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        async def handle(item: Message) -> None:
            if not isinstance(item, AudioIn):
                await outbox.put(item)
                return
            for piece in self.feed(item):
                await outbox.put(piece)

        async def on_end() -> None:
            for piece in self._release(None):
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
    def listening(self) -> bool:
        """The gate is open: audio passes to the VAD."""
        return self.config.mode != "wake" or self._busy or self._pos < self._open_until

    def feed(self, item: AudioIn) -> list[AudioIn]:
        """One piece of microphone audio in; what the VAD gets now (possibly nothing, while the
        stage holds audio back)."""
        muted = self.host.muted
        detections = self.detector.process(bytes(len(item.pcm)) if muted else item.pcm)
        self._pos += len(item.pcm) // 2
        busy = self.host.state not in (State.IDLE, State.WAITING_FOR_DEVICE)
        if self._busy and not busy:  # a turn has ended: follow-ups need no wake word for a while
            self._open_until = max(self._open_until, self._pos + int(self.config.follow_up_s * SAMPLE_RATE))
        was_open = self.listening
        self._busy = busy
        self._held.append(item)
        self._held_samples += len(item.pcm) // 2
        cut: int | None = None
        for detection in detections:
            cut = self._woken(detection, was_open)
        if self.listening:
            return self._release(cut if not was_open else None, open_=True)
        out: list[AudioIn] = []
        while self._held and self._held_samples - len(self._held[0].pcm) // 2 >= self._hold:
            oldest = self._held.popleft()
            self._held_samples -= len(oldest.pcm) // 2
            out.append(replace(oldest, pcm=bytes(len(oldest.pcm))))
        return out

    def _woken(self, detection: Detection, was_open: bool) -> int:
        """The wake word was heard: tell observers, keep the gate open; returns the sample where
        the word ended (the audio from there on is the question)."""
        self.detections += 1
        self.woken += not was_open
        self._open_until = max(self._open_until, detection.at_sample + int(LISTEN_AFTER_WAKE_S * SAMPLE_RATE))
        held_from = self._pos - self._held_samples
        search = max(held_from, detection.at_sample - SAMPLE_RATE * GAP_SEARCH_MS[0] // 1000)
        audio = self._held_audio(search, detection.at_sample)
        cut = search + word_gap(audio)
        at_ms = self._held[0].start_ms + (detection.at_sample - held_from) * 1000 / SAMPLE_RATE
        _LOGGER.info(
            "wake word %r heard at %.0f ms (p=%.2f); the question starts at %.0f ms",
            self.detector.wake_word, at_ms, detection.probability, at_ms - (detection.at_sample - cut) / 16,
        )  # fmt: skip
        host = self.host
        host.events.publish(
            WakeDetected(self.detector.wake_word, self.detector.name, at_ms, detection.probability)
        )
        if host.state == State.IDLE:
            host.events.publish(StateChanged(State.LISTENING, host.muted))
        if self.config.wake_earcon and host.output is not None:
            rate = host.tts.sample_rate if host.tts is not None else 22_050
            task = asyncio.get_running_loop().create_task(
                host.output.play_notice(earcon(rate), rate), name="earcon"
            )
            self._earcons.add(task)
            task.add_done_callback(self._earcons.discard)
        return cut

    def _held_audio(self, first: int, end: int) -> bytes:
        """The held audio between two sample positions."""
        held_from = self._pos - self._held_samples
        return b"".join(item.pcm for item in self._held)[2 * (first - held_from) : 2 * (end - held_from)]

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
