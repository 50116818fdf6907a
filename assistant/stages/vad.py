"""The VAD/endpointer stage: ``AudioIn`` in, ``SpeechStarted`` and ``Utterance`` out.

Audio pieces of any length are re-chunked by ``Framer`` into whole ``frame_ms`` frames (webrtcvad
takes only 10, 20 or 30 ms of 16 kHz mono int16), each frame is classified by webrtcvad, and
``segmenter.Segmenter`` decides where turns start and end.

Turn ids come from the channel's ``Turns`` registry, one per started turn. ``SpeechStarted`` goes out as
soon as the segmenter starts a turn; if that turn is later dropped (too little speech: a cough,
a door), its id is used up and the turn is cancelled through ``Turns.cancel``, so every stage
drops whatever of it is still queued or in flight. No ``Utterance`` follows a dropped turn.

Mains hum: webrtcvad calls a plain 50/60 Hz sine of moderate level (about -20 dBFS) speech in
every mode. The stage therefore classifies a high-passed copy of the audio (``HighPass``, 150 Hz,
linear-phase FIR, 8 ms delay, about -45 dB at 50 Hz and -36 dB at 60 Hz); utterances carry the
original audio. Hum harmonics above the cut-off (a 100/150 Hz buzz) are not removed.

Steady noise (``vad.floor_gate``): webrtcvad takes a noise that starts out of silence for speech,
for seconds; a voiced verdict stands only for a frame 6 dB above the noise floor of the last 1.5 s
(``envelope.FloorGate``, on the high-passed copy). While the speaker plays, the echo gate judges
instead (the reply's own echo would raise the floor under the user's voice). The echo gate hears the
microphone as captured (``AudioIn.raw``, before ``stages/apm.py``), the VAD the processed audio; while
the speaker plays, a frame is also voiced (and strictly voiced) where the captured one is to a
plain and a strict webrtcvad of its own (the canceller's suppressor may take the onset of the
user's words off the processed audio), and the gate judges it.

Warm-up: webrtcvad's noise model starts empty, so it calls the first two or three frames of any
noise speech. The first ``warmup_ms`` (90 ms) of input are classified (to train it) but taken as
non-speech; their audio still serves as pre-roll, so speech at the very start is kept.

Speculation (``vad.speculate_after_ms``): at a pause the stage sends the utterance so far as a
*speculative* ``Utterance``, so ASR, the LLM and TTS start before the endpoint. If speech
resumes, that turn is cancelled everywhere (``SpeculationVoid``) and the speech continues under a new
turn id. When the endpoint is final, ``EndpointFinal(turn_id, speech_end_ms, endpoint_ms)`` says so; a
speculated turn is not sent again. ``quick_end(turn_id)`` shortens the end-of-turn silence when the
speculative transcript looks complete (adaptive endpointing); ``transcribed(turn_id, text)`` hands
the segmenter every speculative transcript (finished, a question, open, or unsure: it holds the
turn when the words leave it open); ``end_now(turn_id)`` ends it at once when the transcript is a
recognised command.

The turn model (``vad.turn_model``, a ``TurnDetector``: Smart Turn v3.2): once a pause's
speculative transcript is in and reads as a finished statement or unsure (``ASKS_TURN_MODEL``;
a question, an open sentence or a command needs no verdict), the stage hands the paused
utterance to the model in its own thread (``endpointing/judge.py``), and its verdict
(probability >= ``vad.turn_threshold``: complete) reaches the segmenter when it comes, if the
pause still stands (``segmenter``'s table says what each verdict does). A model that fails is
logged, and the pause is judged by the transcript alone. ``turn_model`` and ``turn_threshold``
apply live; a model that is missing (or onnxruntime absent) is reported once, clearly.

Speech so far (``progress_ms``, set from ``asr.during_speech`` on live input): while a turn's
speech goes on, every ``progress_ms`` of input at a voiced frame, and at the ``QUIET_FRAMES``-th
unvoiced frame in a row (``quiet``: the speech may have ended; with the default 120 ms the pause
comes three frames later), the stage sends ``SpeechSoFar``, the utterance's audio so far, so
that ASR can transcribe it during speech and have the transcript ready at the pause.

Barge-in head start (``VoiceSuspected``): a turn starts only once ``start_ms`` of voiced audio has been
heard, which is most of the 200 ms in which a reply must fall silent when the user talks over it.
So at the first voiced frame over playback that the echo gate lets through, the stage reports
``VoiceSuspected(True)`` (the controller pauses the speaker, keeping its queue); when the turn starts
it reports ``VoiceSuspected(False)`` after ``SpeechBegan`` (which cancels the reply), and when
``SUSPECT_QUIET_FRAMES`` frames the plain VAD calls unvoiced pass with no turn started (or
``SUSPECT_MAX_FRAMES`` in all), ``VoiceSuspected(False)`` resumes the reply where it paused. A false
alarm costs a gap of a few frames, never the reply.

The wake word (``WakeWordHeard``, from the wake stage, in stream order): speech before it is the
word, so the segmenter speculates on no turn until speech has followed it, voids a speculation
made on the word alone, and drops a turn that is only the word (``Segmenter.wake_word``).

The stop word: each utterance says whether its speech began while the speaker played
(``over_playback``: the echo gate's view of the frames of the start window), for ASR to check a
short one for "stop".

Positions: the segmenter counts samples; the stage puts them on the input timeline by adding
the ``start_ms`` of the first ``AudioIn`` it sees. Input is assumed contiguous. A partial frame
left at ``EndOfStream`` (under ``frame_ms``) is discarded.

``Framer`` and ``HighPass`` live in ``endpointing/frames.py``; the segmenter's events become
messages and reports in ``stages/vad_events.py`` (``SegmenterEvents``, a part of ``VadStage``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from assistant.config import VadConfig
from assistant.contracts import TurnDetector
from assistant.endpointing.boundaries import SegmenterEvent, Started
from assistant.endpointing.echo import EchoGate
from assistant.endpointing.envelope import FloorGate
from assistant.endpointing.frames import BYTES_PER_MS, HIGHPASS_HZ, Framer, HighPass
from assistant.endpointing.judge import TurnJudge
from assistant.endpointing.segmenter import Segmenter
from assistant.errors import StageError
from assistant.messages import SAMPLE_RATE, AudioIn, Message, SpeechSoFar, WakeWordHeard
from assistant.stages.base import Queue, run_inbox
from assistant.stages.vad_events import SegmenterEvents
from assistant.text.speakable import transcript_kind
from assistant.turn.reports import TurnChannel, VoiceSuspected

_LOGGER = logging.getLogger(__name__)

WARMUP_MS = 90
"""Default length of input whose VAD verdicts are ignored while webrtcvad adapts, in ms."""
SUSPECT_QUIET_FRAMES = 5
"""Unvoiced frames (150 ms of 30 ms, longer than most gaps between words) after which a
suspected barge-in that started no turn is let go."""
QUIET_FRAMES = 1
"""Unvoiced frames in a row after speech at which the utterance so far is sent as ``quiet``
(at 2, the bench corpus's transcripts were ready at the pause less often, and no more right)."""
ASKS_TURN_MODEL = ("finished", "unsure")
"""The transcript kinds whose pause the turn model is asked about. A question ends at the quick
end and an open sentence is held whatever the model says (the segmenter's table), and a command
ends at once: the model's CPU (about 50 ms on this machine, at the moment ASR, the LLM's prompt
and the turn model all want the two cores) would only slow the speculated answer."""
SUSPECT_MAX_FRAMES = 50
"""Frames (1.5 s of 30 ms) after which a suspected barge-in that started no turn is let go."""


class VadStage(SegmenterEvents):
    """Frames audio, runs webrtcvad on each frame, and emits turn boundaries."""

    name = "vad"

    def __init__(
        self,
        config: VadConfig,
        channel: TurnChannel,
        *,
        highpass_hz: float | None = HIGHPASS_HZ,
        warmup_ms: int = WARMUP_MS,
        turn_model: TurnDetector | None = None,
        turn_model_problem: str = "",
    ) -> None:
        """``turn_model``: the end-of-turn model, asked at each pause while ``vad.turn_model`` is on;
        ``turn_model_problem``: why there is none (logged when ``vad.turn_model`` asks for it)."""
        try:
            import webrtcvad
        except ImportError as err:
            raise StageError(
                "vad", "webrtcvad is not installed: install the 'webrtcvad-wheels' package"
            ) from err
        self.config = config
        self.channel = channel
        self._turns = channel.turns
        self._webrtcvad: Any = webrtcvad
        self._vad: Any = webrtcvad.Vad(config.aggressiveness)
        self._pending_config: VadConfig | None = None
        self._framer = Framer(config.frame_ms)
        self._raw_framer = Framer(config.frame_ms)
        """The same frames as captured (``AudioIn.raw``), for the echo gate."""
        self._highpass = HighPass(highpass_hz) if highpass_hz else None
        self._raw_highpass = HighPass(highpass_hz) if highpass_hz else None
        self._raw_vads: tuple[Any, Any] = (webrtcvad.Vad(config.aggressiveness), webrtcvad.Vad(3))
        """The plain and the strict VAD on the frames as captured (where they differ: the
        microphone is processed), for the frames heard while the speaker plays."""
        self._warmup_frames = -(-warmup_ms // config.frame_ms)
        self._segmenter = Segmenter(config)
        self._floor = FloorGate(config.frame_ms) if config.floor_gate else None
        self.echo_gate: EchoGate | None = None
        """Set while a speaker can play: voiced frames that are only the assistant's echo are ignored."""
        self._strict_vad: Any = webrtcvad.Vad(3)
        self._suspect = False
        self._suspect_quiet = 0
        self._suspect_frames = 0
        self._speculating = False
        self._speech_start_ms = 0.0
        self.turn_model = turn_model
        self._turn_model_problem = turn_model_problem or "no turn model was loaded"
        self._judge: TurnJudge | None = None
        self.verdicts: list[tuple[int, float]] = []
        """(turn id, probability) of the turn model's verdicts, the last 100."""
        self._warn_turn_model()
        self._played_frame = -(10**9)
        """The last frame classified while the speaker played."""
        self._over_playback = False
        """The open turn's speech began while the speaker played."""
        self._paused_pcm = b""
        """The paused utterance, until its transcript says whether the turn model is needed."""
        self.progress_ms = 0
        """Send ``SpeechSoFar`` every this many ms of a turn's speech (at a voiced frame); 0: never."""
        self._progress_at = 0.0
        self._unvoiced = 0
        """Unvoiced frames in a row, up to the previous frame."""
        self.speculations = 0
        """Speculative utterances sent (at a pause in speech)."""
        self.discarded = 0
        """Speculations made void because speech resumed."""
        self.muted = False
        """While True, input is heard as silence (an open utterance ends as if the room went quiet)."""
        self._turn_id: int | None = None
        self._last_turn = 0
        """The last turn that ended (speech soon after its end continues it)."""
        self._origin_ms: float | None = None
        self.frames = 0
        """Frames classified."""
        self.voiced_frames = 0
        """Frames webrtcvad called speech."""
        self.utterances = 0
        """Utterances emitted (truncated ones included)."""
        self.dropped = 0
        """Started turns dropped for too little speech (and cancelled)."""
        self.truncated = 0
        """Utterances cut at ``max_utterance_ms``."""

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        """Read ``AudioIn`` until ``EndOfStream``; then flush the segmenter and forward it."""

        async def handle(item: Message) -> None:
            if isinstance(item, WakeWordHeard):
                for message in self.wake_word(item.at_ms):
                    await outbox.put(message)
                return
            if not isinstance(item, AudioIn):
                await outbox.put(item)
                return
            for message in self.feed(item):
                await outbox.put(message)

        async def on_end() -> None:
            for message in self.finish():
                await outbox.put(message)

        await run_inbox(inbox, outbox, self.channel, handle, on_end, stage=self.name)

    def feed(self, item: AudioIn) -> list[Message]:
        """Classify and segment one piece of audio (no awaiting); return the messages to send."""
        if self._origin_ms is None:
            self._origin_ms = item.start_ms
        captured = item.pcm if item.raw is None else item.raw
        frames = self._framer.push(bytes(len(item.pcm)) if self.muted else item.pcm)
        raws = self._raw_framer.push(bytes(len(captured)) if self.muted else captured)
        if not frames:
            return []
        heard = self._highpassed(frames, self._highpass)
        raw_heard = self._highpassed(raws, self._raw_highpass) if item.raw is not None else []
        messages: list[Message] = []
        # when each frame's last sample arrived: the piece's arrival, less what follows the frame
        arrived_ns = item.arrived_ns or time.monotonic_ns()
        frame_ns = self._framer.frame_bytes * 1_000_000 // BYTES_PER_MS
        last_ns = arrived_ns - self._framer.pending * 1_000_000 // BYTES_PER_MS
        for index, (frame, vad_frame) in enumerate(zip(frames, heard, strict=True)):
            voiced = bool(self._vad.is_speech(vad_frame, SAMPLE_RATE))
            voiced &= self.frames >= self._warmup_frames
            sounded = voiced
            at_ns = last_ns - (len(frames) - 1 - index) * frame_ns
            raw = raws[index] if index < len(raws) else frame
            playing = self.echo_gate is not None and self.echo_gate.playing(raw, at_ns)
            raw_frame = raw_heard[index] if index < len(raw_heard) else None
            if playing:
                self._played_frame = self.frames
                voiced |= raw_frame is not None and self._raw_voiced(raw_frame, strict=False)
            above_floor = self._floor is None or self._floor.loud(vad_frame)
            voiced &= above_floor or playing  # while the speaker plays, the echo gate judges
            if playing and voiced:
                assert self.echo_gate is not None
                strict = bool(self._strict_vad.is_speech(vad_frame, SAMPLE_RATE))
                strict |= raw_frame is not None and self._raw_voiced(raw_frame, strict=True)
                voiced = self.echo_gate.allow(raw, strict)
            self.frames += 1
            self.voiced_frames += voiced
            listening = self._segmenter.listening
            events = self._segmenter.process(frame, voiced)
            messages += self._translate(events)
            counted = self._segmenter.voiced  # a murmur in a turn's silence is no speech
            if self.progress_ms and self._turn_id is not None and self._segmenter.in_speech:
                messages += self._progress(self._turn_id, counted)
            self._unvoiced = 0 if counted else self._unvoiced + 1
            self._watch_voice(voiced and playing and listening, sounded, events)
        self._apply_pending()
        return messages

    def _highpassed(self, frames: list[bytes], highpass: HighPass | None) -> list[bytes]:
        """``frames`` through ``highpass`` (the same frames unfiltered without one)."""
        if highpass is None or not frames:
            return frames
        filtered = highpass(b"".join(frames))
        size = self._framer.frame_bytes
        return [filtered[i : i + size] for i in range(0, len(filtered), size)]

    def _raw_voiced(self, frame: bytes, *, strict: bool) -> bool:
        """The frame as captured is speech (to the strict VAD, if ``strict``): while the speaker
        plays, the echo canceller and its suppressor may take the onset of the user's words off
        the processed frame, and the echo gate judges the captured one."""
        return bool(self._raw_vads[strict].is_speech(frame, SAMPLE_RATE))

    def _progress(self, turn_id: int, voiced: bool) -> list[Message]:
        """``SpeechSoFar`` at a voiced frame ``progress_ms`` after the last (or the turn's start),
        and at the ``QUIET_FRAMES``-th unvoiced frame in a row (``quiet``)."""
        position = self._segmenter.position_ms
        quiet = not voiced and self._unvoiced + 1 == QUIET_FRAMES
        if not quiet and (not voiced or position - self._progress_at < self.progress_ms):
            return []
        self._progress_at = position
        pcm = self._segmenter.audio_so_far
        end_ms = (self._origin_ms or 0.0) + position
        return [SpeechSoFar(turn_id, pcm, self._speech_start_ms, end_ms, quiet)]

    def _watch_voice(self, suspect: bool, sounded: bool, events: list[SegmenterEvent]) -> None:
        """Barge-in's head start: pause the speaker at the first voiced frame over playback that
        the echo gate lets through; resume it when no turn started and the room fell quiet.

        While paused, quiet is judged by the plain VAD (``sounded``), not the gate: the echo dies
        away within the echo path's delay, so a voice still heard is the room's. The gate goes
        on comparing with the playback from before the pause for its hold time and may dismiss
        frames of the user's speech as echo meanwhile; a turn starts once the hold has passed.
        A pause that started no turn ends after ``SUSPECT_MAX_FRAMES`` all the same."""
        if not self._suspect:
            if suspect and not any(isinstance(e, Started) for e in events):
                self._suspect, self._suspect_quiet, self._suspect_frames = True, 0, 0
                self.channel.report(VoiceSuspected(True))
            return
        self._suspect_frames += 1
        self._suspect_quiet = 0 if sounded else self._suspect_quiet + 1
        if (
            any(isinstance(e, Started) for e in events)
            or self._suspect_quiet >= SUSPECT_QUIET_FRAMES
            or self._suspect_frames >= SUSPECT_MAX_FRAMES
        ):
            self._suspect = False
            self.channel.report(VoiceSuspected(False))

    def wake_word(self, at_ms: float) -> list[Message]:
        """A wake word was heard at ``at_ms`` (input timeline): speech before it is the word."""
        origin = self._origin_ms if self._origin_ms is not None else at_ms
        position = int(round((at_ms - origin) * SAMPLE_RATE / 1000))
        return self._translate(self._segmenter.wake_word(position))

    def finish(self) -> list[Message]:
        """End of input: close an open turn; return the messages to send."""
        self._framer.reset()
        self._raw_framer.reset()
        messages = self._translate(self._segmenter.finish())
        if self._judge is not None:
            self._judge.close()
            self._judge = None
        return messages

    def reconfigure(self, config: VadConfig) -> None:
        """New VAD settings (``frame_ms`` excepted), taking effect between turns."""
        if config.frame_ms != self.config.frame_ms:
            raise ValueError("vad.frame_ms cannot change without a restart")
        self._pending_config = config
        self._apply_pending()

    def _apply_pending(self) -> None:
        config = self._pending_config
        if config is None or self._segmenter.in_speech:
            return
        if config.floor_gate != self.config.floor_gate:
            self._floor = FloorGate(config.frame_ms) if config.floor_gate else None
        asked_now = config.turn_model and config.speculate_after_ms
        asked_before = self.config.turn_model and self.config.speculate_after_ms
        self.config, self._pending_config = config, None
        if asked_now and not asked_before:
            self._warn_turn_model()
        self._vad = self._webrtcvad.Vad(config.aggressiveness)
        self._raw_vads = (self._webrtcvad.Vad(config.aggressiveness), self._raw_vads[1])
        position, wake_end = self._segmenter.frames_done, self._segmenter.wake_end
        self._segmenter = Segmenter(config)
        self._segmenter.frames_done, self._segmenter.wake_end = position, wake_end

    def quick_end(self, turn_id: int, *, question: bool = False) -> None:
        """The speculative transcript of ``turn_id`` looks complete (``question``: it ends in
        ``?``): end the turn sooner."""
        if turn_id == self._turn_id and self._speculating:
            self._translate(self._segmenter.quick_end(question=question))

    def end_now(self, turn_id: int) -> None:
        """The speculative transcript of ``turn_id`` is a recognised command: end the turn now."""
        if turn_id == self._turn_id and self._speculating:
            self._translate(self._segmenter.end_now())

    def forget_last(self, turn_id: int) -> None:
        """``turn_id`` stands alone (the stop word): speech after it is a new turn."""
        if turn_id == self._last_turn:
            self._segmenter.forget_last()

    def transcribed(self, turn_id: int, text: str) -> None:
        """The speculative transcript of ``turn_id``: finished (a question or not), open (it ends
        on a word that leaves it open) or unsure, for the segmenter's judges. A finished statement
        or an unsure one asks the turn model about the pause (``ASKS_TURN_MODEL``)."""
        if turn_id == self._turn_id and self._speculating:
            kind = transcript_kind(text)
            pcm, self._paused_pcm = self._paused_pcm, b""
            if pcm and kind in ASKS_TURN_MODEL:
                self._ask_turn_model(turn_id, pcm)
            self._translate(self._segmenter.heard(kind))

    def turn_verdict(self, turn_id: int, probability: float) -> None:
        """The turn model's probability that the paused ``turn_id`` is complete."""
        self.verdicts = [*self.verdicts[-99:], (turn_id, probability)]
        if turn_id == self._turn_id and self._speculating:
            complete = probability >= self.config.turn_threshold
            _LOGGER.debug("turn %d: the turn model says %.2f (%s)", turn_id, probability, complete)
            self._translate(self._segmenter.turn_verdict(complete))

    def _warn_turn_model(self) -> None:
        # the model is asked at pauses: without speculation it would never be
        if self.config.turn_model and self.config.speculate_after_ms and self.turn_model is None:
            _LOGGER.warning(
                "vad.turn_model is on but %s: the end of turn is judged by the transcript alone",
                self._turn_model_problem,
            )

    def _ask_turn_model(self, turn_id: int, pcm: bytes) -> None:
        """Hand the paused utterance to the turn model (``TurnJudge``); its verdict comes back on
        the event loop (``turn_verdict``)."""
        if self.turn_model is not None and self.config.turn_model:
            if self._judge is None:
                self._judge = TurnJudge(self.turn_model)
            self._segmenter.verdict_due = self._judge.ask(turn_id, pcm, self.turn_verdict)
