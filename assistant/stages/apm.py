"""Audio processing, first after the source: ``AudioIn`` in, ``AudioIn`` out, cleaned.

WebRTC's APM (``audio/processing.py``: echo cancellation, noise suppression, gain) runs on the
microphone before the wake word, the VAD and ASR. Which pieces it touches is
``audio_processing.inputs``: ``live`` (the default) only pieces from a live device (their
``arrived_ns`` is set), so a file or stdin is heard as recorded unless ``all`` asks otherwise.
The processor is made at the first piece to be processed: where pywebrtc-audio does not import,
that is where the one warning is logged, and pieces then pass as they came.

The far end (echo cancellation): the sink (``contracts.EchoReference``, a live speaker) files
what it played under the time it is heard (``audio/reference.py``). The microphone's timeline is
put on the same clock by the pieces' arrival (``reference.CaptureClock``: the least delayed piece
of the last minute; a piece's capture is taken as its arrival, so the capture path's latency
counts as echo delay). Each run of whole frames is fed the far end from
``audio_processing.reference_margin_ms`` after its capture on, as many samples: the echo comes
that margin plus the capture latency plus the acoustic path after its reference, and AEC3's delay
estimator finds that (measured at the stage: 20 to 150 ms fully, 250 ms only partly). If the
speaker's own estimate of when audio is heard (pacat's schedule plus ``latency_ms``, PortAudio's
DAC time) is late by more than that, the echo comes before its reference and is not cancelled
(about 4 dB taken off instead of over 20). The margin must stay under what the sink queues ahead
of its device (about 50 ms with pacat), or the newest far end is not filed yet when it is read.
Without a live speaker the APM runs without AEC.

Where the microphone hears (next to) nothing of the speaker (a headset, a speaker across the room,
the virtual devices without a loopback), there is no echo to cancel, and AEC3 still clips the
first 40-60 ms of each of the user's words and some of their bursts while the speaker plays (the
stop word's "s" and "t"; Whisper heard "Stop." as "Snut..." in one run of four). So the stage
measures how loud the far end comes back (``processing.Coupling``, from the captured audio
against the far end) and, with echo cancellation alone on, passes each piece as captured while
that coupling is under -35 dB; the canceller keeps running on it, so it has converged when an echo
appears. Until a second of far end has been measured it assumes echo.

Each piece out keeps the samples as captured (``AudioIn.raw``): the VAD's energy echo gate, the
second line, judges those, so a canceller or suppressor whose residue jumps (a wobbling playback
clock, a re-convergence) never makes the assistant interrupt itself; the VAD's speech verdicts,
the wake word and ASR hear the processed audio.

The APM works on whole 10 ms frames: a piece that ends inside a frame keeps that part back for
the next piece (the timeline stays contiguous: the next piece out starts where it began).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from assistant.audio.processing import FRAME, Coupling, Processor, load
from assistant.audio.reference import CaptureClock
from assistant.config import AudioProcessingConfig
from assistant.contracts import EchoReference
from assistant.messages import SAMPLE_RATE, AudioIn, Message
from assistant.stages.base import Queue, run_inbox
from assistant.turn.reports import TurnChannel

_LOGGER = logging.getLogger(__name__)

FRAME_BYTES = 2 * FRAME
NS_PER_SAMPLE = 1_000_000_000 / SAMPLE_RATE

Loader = Callable[[AudioProcessingConfig, bool], Processor | None]


def _load(config: AudioProcessingConfig, echo: bool) -> Processor | None:
    return load(config, echo=echo)


class AudioProcessingStage:
    """Runs each live microphone piece through WebRTC's APM, against what the speaker played."""

    name = "apm"

    def __init__(
        self,
        config: AudioProcessingConfig,
        channel: TurnChannel,
        reference: EchoReference | None,
        loader: Loader = _load,
    ) -> None:
        """``reference``: the live speaker's played audio (None: no echo to cancel);
        ``loader``: makes the processor (tests give one that fails to import)."""
        self.config = config
        self.channel = channel
        self.reference = reference
        self._loader = loader
        self._processor: Processor | None = None
        self._loaded = False
        self._rest = b""
        """Bytes of the last piece past its last whole frame, waiting for the next piece."""
        self._rest_ms = 0.0
        self._rest_arrived = 0
        self.clock = CaptureClock()
        """The microphone's timeline on the monotonic clock (from the pieces' arrival)."""
        self.processed_ms = 0.0
        """Audio that went through the APM, in ms."""
        self.errors = 0
        """Pieces the APM raised on (passed on as they came)."""
        self.coupling = Coupling()
        """How loud the speaker comes back into the microphone (echo cancellation)."""
        self.bypassed_ms = 0.0
        """Audio passed on as captured because the microphone hears no echo worth cancelling, in ms."""

    @property
    def processor(self) -> Processor | None:
        """The APM, once made (None before the first live piece, or when it cannot load)."""
        return self._processor

    def reconfigure(self, config: AudioProcessingConfig) -> None:
        """New ``[audio_processing]`` keys: the APM is made again at the next piece."""
        if config != self.config:
            self.config = config
            self._processor, self._loaded = None, False
            self.coupling = Coupling()

    def _wanted(self, item: AudioIn) -> bool:
        inputs = self.config.inputs
        return inputs == "all" or (inputs == "live" and item.arrived_ns > 0)

    def _get(self) -> Processor | None:
        if not self._loaded:
            self._loaded = True
            self._processor = self._loader(self.config, self.reference is not None)
            if self._processor is not None:
                features = self._processor.features
                _LOGGER.info(
                    "audio processing: echo cancellation %s, noise suppression %s, gain control %s",
                    "on" if features.echo else "off",
                    features.noise,
                    "on" if features.gain else "off",
                )
        return self._processor

    def feed(self, item: AudioIn) -> list[AudioIn]:
        """The pieces to pass on for ``item`` (none while a piece holds less than a frame)."""
        processor = self._get() if self._wanted(item) else None
        if processor is None:
            return [*self.flush(), item]
        data = self._rest + item.pcm
        whole = len(data) - len(data) % FRAME_BYTES
        start_ms = item.start_ms - len(self._rest) / 2 / SAMPLE_RATE * 1000
        self._rest = data[whole:]
        self._rest_ms = start_ms + whole / 2 / SAMPLE_RATE * 1000
        self._rest_arrived = item.arrived_ns
        if not whole:
            return []
        near = np.frombuffer(data[:whole], dtype="<i2")
        far = self._far(item, start_ms, len(near)) if processor.features.echo else None
        try:
            out = processor.process(near, far).tobytes()
        except Exception as err:  # a foreign library's fault must not cost the microphone
            self.errors += 1
            if self.errors == 1:
                _LOGGER.warning("audio processing failed (%r): the microphone passes unprocessed", err)
            out = data[:whole]
        if far is not None and self._echo_only(processor):
            self.coupling.add(near, far)
            if not self.coupling.echo:  # the canceller keeps learning; its output is not used
                out = data[:whole]
                self.bypassed_ms += len(near) / SAMPLE_RATE * 1000
        self.processed_ms += len(near) / SAMPLE_RATE * 1000
        arrived = item.arrived_ns - int(len(self._rest) // 2 * NS_PER_SAMPLE) if item.arrived_ns else 0
        return [AudioIn(out, start_ms, arrived, raw=data[:whole])]

    @staticmethod
    def _echo_only(processor: Processor) -> bool:
        """Echo cancellation alone runs (the captured audio may stand in for its output)."""
        features = processor.features
        return features.echo and features.noise == "off" and not features.gain

    def _far(self, item: AudioIn, start_ms: float, count: int) -> np.ndarray:
        """What was heard from ``reference_margin_ms`` after the capture of timeline position
        ``start_ms`` on, ``count`` samples of it."""
        if self.reference is None or not item.arrived_ns:
            return np.zeros(count, dtype=np.int16)
        self.clock.observe(item.start_ms + len(item.pcm) / 2 / SAMPLE_RATE * 1000, item.arrived_ns)
        start_ns = self.clock.at(start_ms) + self.config.reference_margin_ms * 1_000_000
        return np.frombuffer(self.reference.played(start_ns, count), dtype="<i2")

    def flush(self) -> list[AudioIn]:
        """A partial frame still held, unprocessed (at the end, or when input stops being processed)."""
        if not self._rest:
            return []
        rest, self._rest = self._rest, b""
        return [AudioIn(rest, self._rest_ms, self._rest_arrived)]

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        async def handle(item: Message) -> None:
            if not isinstance(item, AudioIn):
                await outbox.put(item)
                return
            for piece in self.feed(item):
                await outbox.put(piece)

        async def on_end() -> None:
            for piece in self.flush():
                await outbox.put(piece)

        await run_inbox(inbox, outbox, self.channel, handle, on_end, stage=self.name)
