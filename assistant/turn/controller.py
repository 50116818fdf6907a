"""The turn controller: every turn's lifecycle, in one object that stages report to.

It owns the turn registry (``Turns``), the latency records (``LatencyTracker``), the budget
(``BudgetKeeper``: acknowledgements), the listen mode (``Activation``), the state and the mute,
and publishes what observers see on ``events``. Stages hold it as their ``TurnChannel`` and tell
it what happened (``turn.reports``); the pipeline's commands (ask, say, cancel, mute, listen) go
through it too.

Lifecycle: a turn begins at speech (VAD) or at a command. At a pause the VAD speculates: ASR, the
LLM and TTS start on the utterance so far, its audio held (``Turns.hold``). ``EndpointFinal``
commits it (the held audio may play, the budget's clock starts); ``SpeculationVoid`` discards it.
A committed voice turn, or a command, cancels older turns in flight when ``barge_in`` is on. A turn
ends when its last audio has played (``Finished``), when it is cancelled, or when a stage fails on
it (``Failed``: an ``error`` event, an ``outcome: error`` record, and a short spoken apology where
the turn was to be spoken). See ``docs/architecture.md``, "The path of a turn".

A command matched by the intents stage (``Intended``) is published (``IntentRecognized``) only once
its turn is committed, as its transcript is; what it switches (``Commanded``) and a "stop"
(``StopAsked``) are reported only after the commit. ``announce`` speaks text that belongs to no
turn (a timer's alarm).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from assistant.clock import StreamClock
from assistant.config import Config
from assistant.contracts import Speaker, Synthesizer
from assistant.errors import AssistantError, StageTimeoutError
from assistant.events import (
    DeviceCommand,
    ErrorEvent,
    Event,
    EventBus,
    IntentNotRecognized,
    IntentRecognized,
    ReasoningText,
    ReplyChunk,
    ReplyFinished,
    State,
    StateChanged,
    StopWord,
    TranscriptReady,
    TurnFinished,
    WakeDetected,
)
from assistant.turn.activation import Activation
from assistant.turn.budget import AckPlayer, BudgetKeeper, synthesize_all
from assistant.turn.kinds import Action, Mark, Outcome, TurnKind
from assistant.turn.latency import LatencyTracker, TurnRecord
from assistant.turn.registry import Turns
from assistant.turn.reports import (
    ActionTaken,
    ChunkReady,
    Commanded,
    EndpointFinal,
    Failed,
    Finished,
    FirstChunk,
    Generated,
    Intended,
    Marked,
    NoSpeech,
    NotIntended,
    Played,
    Reasoning,
    Replied,
    ReplyComplete,
    Report,
    SpeculationVoid,
    SpeechBegan,
    SpeechDropped,
    StopAsked,
    StopWordHeard,
    Unheard,
    VoiceSuspected,
    WakeClosed,
    WakeHeard,
)

_LOGGER = logging.getLogger(__name__)

SENTENCE_ENDS = (".", "!", "?", "…")
PLAYING_SPAN_NS = 300_000_000
"""``playing`` looks this far back and ahead (the device's buffer) for audio heard."""


class Endpointer(Protocol):
    """What the controller asks of the VAD stage."""

    muted: bool

    def transcribed(self, turn_id: int, text: str) -> None:
        """The speculative transcript: the endpointer ends the turn sooner when it reads as
        finished, and holds it when it ends on a word that leaves it open."""

    def end_now(self, turn_id: int) -> None:
        """The speculative transcript is a recognised command: end the turn now."""


class WakeGate(Protocol):
    """What the controller asks of the wake stage."""

    @property
    def awake(self) -> bool:
        """The gate is open for a question (the wake word was heard, a turn is in flight, or a
        follow-up may come), not only for the stop word over playback."""


class Alarms(Protocol):
    """The timers' keeper, as the stop word uses it."""

    def silence(self) -> int:
        """Stop every ringing alarm; returns how many rang."""


class NoticePlayer(AckPlayer, Protocol):
    """The output stage, as the controller uses it: acknowledgements and apologies."""

    async def play_notice(self, pcm: bytes, rate: int) -> None:
        """Play audio that belongs to no live turn (an apology)."""


@dataclass
class TurnInfo:
    """How a turn began."""

    kind: TurnKind
    request_id: str | None = None
    """The ``id`` of the command that started it, echoed in its events."""


class TurnController:
    """Owns turn lifecycle; the ``TurnChannel`` every stage reports to."""

    def __init__(
        self,
        config: Config,
        clock: StreamClock,
        *,
        barge_in: bool,
        on_turn: Callable[[TurnRecord], None] | None = None,
        on_token: Callable[[int, str], None] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.turns = Turns()
        self.tracker = LatencyTracker(self._finished, self._marked)
        self.events = EventBus()
        self.budget = BudgetKeeper(config.latency, self.tracker, clock)
        self.activation = Activation(config.listen)
        self.barge_in = barge_in
        """A new turn cancels turns in flight (off for unpaced input: a recording's questions
        must not cut each other's answers off)."""
        self.on_turn = on_turn
        self.on_token = on_token
        self.state = State.IDLE
        self.muted = config.listen.mode == "push"
        self.errors: list[tuple[int, AssistantError]] = []
        """(turn id, error) for every turn that failed, newest last (the last 100)."""
        self.endpointer: Endpointer | None = None
        self.speaker: Speaker | None = None
        self.output: NoticePlayer | None = None
        self.tts: Synthesizer | None = None
        self.wake: WakeGate | None = None
        """The wake stage, with a wake word model."""
        self.alarms: Alarms | None = None
        """The timers' keeper (``intents.enabled``): the stop word silences its alarms."""
        self._stop_only: set[int] = set()
        """Turns that began while the wake gate was open only for the stop word: answered never."""
        self._info: dict[int, TurnInfo] = {}
        self._heard: dict[int, str] = {}
        """Speculative transcripts whose turn is not committed yet."""
        self._void: set[int] = set()
        """Turns in which ASR found no speech."""
        self._failed_held: dict[int, tuple[AssistantError, str]] = {}
        """Speculated turns that failed: apologised for if their endpoint comes."""
        self._unheard_held: set[int] = set()
        """Speculated turns with no usable transcript in time: reprompted if their endpoint comes."""
        self._intended: dict[int, Event] = {}
        """Intent events of speculated turns, published if their endpoint comes."""
        self._announced: dict[str, tuple[bytes, int]] = {}
        """Texts spoken by ``announce``, as synthesized (int16 pcm, sample rate): the last few."""
        self._listen_once = False
        self._notices: set[asyncio.Task[object]] = set()

    @property
    def playing(self) -> bool:
        """The speaker is playing, or has just played (a reply, an alarm, a notice)."""
        if self.speaker is None:
            return False
        now = time.monotonic_ns()
        return self.speaker.playback_peak(now - PLAYING_SPAN_NS, now + PLAYING_SPAN_NS) > 0

    # -- the channel -------------------------------------------------------------------------

    def is_open(self, turn_id: int) -> bool:
        return self.tracker.is_open(turn_id)

    def heard(self, turn_id: int) -> bool:
        return self.tracker.is_open(turn_id) and Mark.FIRST_AUDIO in self.tracker.record(turn_id).marks

    def admit(self, turn_id: int, text: str) -> str | None:
        """A transcript was heard: admit it (wake phrase, push-to-talk) and act on it."""
        admitted = None if turn_id in self._stop_only else self.activation.admit(text, time.monotonic())
        if admitted is None:
            self._no_speech(turn_id)
            self.tracker.discard(turn_id)
            self._settle_state()
            return None
        self.tracker.record(turn_id).transcript = admitted
        if self.turns.is_held(turn_id):  # a speculation: takes effect when the endpoint is final
            self._heard[turn_id] = admitted
            if self.endpointer is not None:
                self.endpointer.transcribed(turn_id, admitted)
            return admitted
        self._commit_effects(turn_id, admitted)
        return admitted

    def report(self, report: Report) -> None:  # noqa: C901 - one case per report type
        match report:
            case Marked(turn_id, mark, at_ms):
                if not self.turns.is_cancelled(turn_id):
                    self.tracker.record(turn_id).mark(mark, at_ms)
            case Generated(turn_id, text):
                if self.on_token is not None:
                    self.on_token(turn_id, text)
            case Reasoning(turn_id, text):
                self.events.publish(ReasoningText(turn_id, self._request_id(turn_id), text))
            case Replied(turn_id, text):
                if self.tracker.is_open(turn_id):
                    self.tracker.record(turn_id).reply = text.strip()
            case ActionTaken(turn_id, action):
                self.tracker.action(turn_id, action)
            case ChunkReady(turn_id, text, index):
                if index == 0 and not text.rstrip("\"')”’»").endswith(SENTENCE_ENDS):
                    self.tracker.action(turn_id, Action.FIRST_CHUNK_SHORTENED)
                self.events.publish(ReplyChunk(turn_id, self._request_id(turn_id), text, index))
            case ReplyComplete(turn_id, text, finish_reason):
                rid = self._request_id(turn_id)
                self.events.publish(ReplyFinished(turn_id, rid, text.strip(), finish_reason))
            case FirstChunk(turn_id, expected_ms):
                if self.tracker.is_open(turn_id):
                    self.tracker.record(turn_id).answer_eta_ms = self.clock.position_ms() + expected_ms
            case Played(turn_id, start_ms, length_ms, handed_ms, answer):
                self._played(turn_id, start_ms, length_ms, handed_ms, answer)
            case Finished(turn_id, done_ms):
                self._done(turn_id, done_ms)
            case Failed(turn_id, error, stage):
                self._failed(turn_id, error, stage)
            case SpeechBegan(turn_id):
                self._speech_began(turn_id)
            case VoiceSuspected(suspect):
                self._voice_suspected(suspect)
            case EndpointFinal(turn_id, speech_end_ms, endpoint_ms):
                self._commit(turn_id, speech_end_ms, endpoint_ms)
            case SpeculationVoid(turn_id, next_turn):
                if turn_id in self._stop_only:
                    self._stop_only.discard(turn_id)
                    self._stop_only.add(next_turn)
                self._failed_held.pop(turn_id, None)
                self._unheard_held.discard(turn_id)
                self._intended.pop(turn_id, None)
                self.budget.closed(turn_id)
                self._heard.pop(turn_id, None)
                self._void.discard(turn_id)
                self.tracker.discard(turn_id)
            case SpeechDropped(turn_id):
                self._no_speech(turn_id)
                self.tracker.discard(turn_id)
                self._settle_state()
            case NoSpeech(turn_id):
                self.tracker.discard(turn_id)
                self._no_speech(turn_id)
                self._settle_state()
            case Unheard(turn_id, _reason):
                if turn_id in self._stop_only:  # heard for the stop word only: no reprompt
                    self.tracker.discard(turn_id)
                    self._no_speech(turn_id)
                elif self.turns.is_held(turn_id):
                    self._unheard_held.add(turn_id)
                elif not self.turns.is_cancelled(turn_id):
                    self._reprompt(turn_id)
            case Intended(turn_id, intent, slots, text):
                self._intent(
                    turn_id,
                    intent,
                    IntentRecognized(turn_id, self._request_id(turn_id), intent, dict(slots), text),
                )
            case NotIntended(turn_id, text):
                self._intent(turn_id, None, IntentNotRecognized(turn_id, self._request_id(turn_id), text))
            case Commanded(turn_id, device, topic, payload):
                if not self.turns.is_cancelled(turn_id):
                    rid = self._request_id(turn_id)
                    self.events.publish(DeviceCommand(turn_id, rid, device, topic, payload))
            case StopAsked(turn_id):
                self._stop_others(turn_id)
            case StopWordHeard(turn_id, text):
                self._stop_word(turn_id, text)
            case WakeHeard(word, model, at_ms, probability):
                self._stop_only.clear()  # the speech under way is for the assistant after all
                self.events.publish(WakeDetected(word, model, at_ms, probability))
                if self.state == State.IDLE:
                    self._set_state(State.LISTENING)
            case WakeClosed():
                self._settle_state()
            case _:
                raise TypeError(f"unknown report {report!r}")

    # -- turns that begin from commands ------------------------------------------------------

    def begin(self, kind: TurnKind, request_id: str | None = None, *, text: str = "") -> int:
        """A turn from a command (``ask``/``say``): a fresh id, marked as its text arrives."""
        turn_id = self.turns.new_id()
        self._begin(turn_id, kind, request_id)
        rec = self.tracker.record(turn_id)
        rec.mark(Mark.TRANSCRIPT, self.clock.position_ms())
        if kind is TurnKind.ASK:
            rec.transcript = text
            self.events.publish(TranscriptReady(turn_id, request_id, text, "text"))
        else:
            rec.reply = text
            rec.handled_by = "say"
        return turn_id

    def cancel(self, turn_id: int | None = None) -> list[int]:
        """Stop one turn, or every turn in flight; returns the turns cancelled."""
        targets = [turn_id] if turn_id is not None else self.tracker.open_turns()
        done = []
        for target in targets:
            if self.tracker.is_open(target):
                self.turns.cancel(target)
                self.tracker.finish(target, Outcome.CANCELLED)
                done.append(target)
        return done

    def device_state(self, state: str) -> None:
        """An audio device reports ``waiting_for_device``, or that it works again."""
        if state == State.WAITING_FOR_DEVICE:
            self._set_state(State.WAITING_FOR_DEVICE)
        elif self.state == State.WAITING_FOR_DEVICE:
            self._set_state(State.IDLE if not self.tracker.open_turns() else State.THINKING)

    def set_muted(self, muted: bool) -> None:
        """While muted, the microphone is heard as silence; commands still work."""
        self.muted = muted
        if self.endpointer is not None:
            self.endpointer.muted = muted
        self.events.publish(StateChanged(self.state, muted))

    def listen(self) -> None:
        """Push-to-talk: open the microphone for one turn even when muted."""
        if self.muted:
            self._listen_once = True
            self.set_muted(False)

    def reconfigure(self, config: Config) -> None:
        """A reloaded config's live keys: listen mode, budgets, the apology text on next start."""
        self.config = config
        awake = self.activation
        self.activation = Activation(config.listen)
        self.activation.adopt(awake)
        self.budget.reconfigure(config.latency)

    async def prepare(self) -> None:
        """Before listening: synthesize the acknowledgements, the holding phrases and the reprompt."""
        if self.tts is None or self.output is None or not self.clock.realtime:
            return
        await self.budget.prepare(self.tts)
        reprompt = self.config.output.reprompt.strip()
        if reprompt and self.config.latency.transcript_ms:
            work = asyncio.to_thread(synthesize_all, self.tts, reprompt)
            pcm = await asyncio.wait_for(work, self.config.deadlines.tts_s)
            self._announced[reprompt] = (pcm, self.tts.sample_rate)

    # -- inside ------------------------------------------------------------------------------

    def _request_id(self, turn_id: int) -> str | None:
        info = self._info.get(turn_id)
        return info.request_id if info else None

    def _begin(self, turn_id: int, kind: TurnKind, request_id: str | None = None) -> None:
        """A turn is the user's now: older turns in flight are cancelled, unless it is spoken and
        ``listen.barge_in`` is off (the user's speech then never stops a reply: a question asked
        over one is answered after it, and only the stop word stops it)."""
        if self.barge_in and (kind is not TurnKind.VOICE or self.config.listen.barge_in):
            for older in self.tracker.open_turns():
                if older < turn_id and not self.turns.is_cancelled(older):
                    self.cancel(older)
        self._info[turn_id] = TurnInfo(kind, request_id)

    def _commit_effects(self, turn_id: int, text: str) -> None:
        self._begin(turn_id, TurnKind.VOICE)
        self.events.publish(TranscriptReady(turn_id, None, text, "voice"))
        if self._listen_once:
            self._listen_once = False
            self.set_muted(True)

    def _speech_began(self, turn_id: int) -> None:
        """Barge-in: the user speaks while a reply plays: stop it at once."""
        self.tracker.record(turn_id)
        if self.wake is not None and not self.wake.awake:
            self._stop_only.add(turn_id)  # the gate is open only for the stop word (an alarm plays)
        if not (self.config.listen.barge_in and self.barge_in):
            return
        speaking = [
            t for t in self.tracker.open_turns()
            if t != turn_id and Mark.FIRST_AUDIO in self.tracker.record(t).marks
        ]  # fmt: skip
        if speaking:
            for older in speaking:
                self.cancel(older)
            self.tracker.action(turn_id, Action.BARGE_IN)
            if self.speaker is not None:
                self.speaker.interrupt()

    def _voice_suspected(self, suspect: bool) -> None:
        """The user may be starting to talk over the reply: pause the speaker until it is sure."""
        if not (self.config.listen.barge_in and self.barge_in) or self.speaker is None:
            return
        if suspect:
            self.speaker.pause()
        else:
            self.speaker.resume()

    def _commit(self, turn_id: int, speech_end_ms: float, endpoint_ms: float) -> None:
        """The endpointer's decision on ``turn_id`` is final."""
        if turn_id in self._void:
            self._void.discard(turn_id)
            return
        failed = self._failed_held.pop(turn_id, None)
        if failed is not None:  # it failed while speculated: now that the user has finished, say so
            rec = self.tracker.record(turn_id)
            rec.mark(Mark.SPEECH_END, speech_end_ms)
            rec.mark(Mark.ENDPOINT, endpoint_ms)
            self._fail_now(turn_id, *failed)
            return
        if self.turns.is_cancelled(turn_id):
            return
        rec = self.tracker.record(turn_id)
        rec.mark(Mark.SPEECH_END, speech_end_ms)
        rec.mark(Mark.ENDPOINT, endpoint_ms)
        if turn_id in self._unheard_held:
            self._unheard_held.discard(turn_id)
            self._reprompt(turn_id)
            return
        self.turns.release(turn_id)
        heard = self._heard.pop(turn_id, None)
        if heard is not None:
            self._commit_effects(turn_id, heard)
        intended = self._intended.pop(turn_id, None)
        if intended is not None:
            self.events.publish(intended)
        self.budget.committed(turn_id, speech_end_ms)

    def _no_speech(self, turn_id: int) -> None:
        self._stop_only.discard(turn_id)
        self.budget.closed(turn_id)
        self._heard.pop(turn_id, None)
        if self.turns.is_held(turn_id):
            self._void.add(turn_id)

    def _played(
        self, turn_id: int, start_ms: float, length_ms: float, handed_ms: float, answer: bool
    ) -> None:
        if not self.tracker.is_open(turn_id):
            return
        rec = self.tracker.record(turn_id)
        if answer and rec.answer_ready_ms is None:
            rec.answer_ready_ms = handed_ms
        rec.mark(Mark.FIRST_AUDIO, start_ms)
        if answer:
            rec.mark(Mark.FIRST_ANSWER_AUDIO, start_ms)
            rec.reply_audio_ms += length_ms

    def _done(self, turn_id: int, done_ms: float) -> None:
        if not self.tracker.is_open(turn_id):
            return
        rec = self.tracker.record(turn_id)
        rec.mark(Mark.DONE, done_ms)
        answered = Mark.FIRST_ANSWER_AUDIO in rec.marks or bool(rec.reply) or rec.handled_by == "intent"
        self.tracker.finish(turn_id, Outcome.ANSWERED if answered else Outcome.EMPTY_REPLY)

    def _failed(self, turn_id: int, err: AssistantError, stage: str) -> None:
        """A stage failed on the turn. A turn already over (cancelled: its command had its answer)
        is only logged; a speculation's failure waits for its endpoint (the user may go on, and
        then it never was); any other ends as that error."""
        if self.turns.is_cancelled(turn_id) or not self.tracker.is_open(turn_id):
            self.turns.cancel(turn_id)
            _LOGGER.info("turn %d: %s after the turn ended: %s", turn_id, err.code, err.message)
            return
        if self.turns.is_held(turn_id):
            self.turns.cancel(turn_id)  # its work stops now
            self._failed_held[turn_id] = (err, stage)
            return
        self._fail_now(turn_id, err, stage)

    def _fail_now(self, turn_id: int, err: AssistantError, stage: str) -> None:
        """The turn ends as ``err``: an error event, the record's outcome, an apology if spoken."""
        self.errors.append((turn_id, err))
        del self.errors[:-100]
        if isinstance(err, StageTimeoutError):
            self.tracker.action(turn_id, Action.STAGE_TIMEOUT)
        spoken = self.tracker.is_open(turn_id) and not self.turns.is_silent(turn_id) and stage != "output"
        spoken &= turn_id not in self._stop_only  # heard for the stop word only: nobody asked
        self.events.publish(ErrorEvent(turn_id, self._request_id(turn_id), err.code, err.message))
        self.turns.cancel(turn_id)
        self.tracker.finish(turn_id, Outcome.ERROR, err.code)
        if spoken:
            self._apologise(turn_id)

    def _reprompt(self, turn_id: int) -> None:
        """No usable words in time: the turn ends ``reprompted`` and the user hears
        ``output.reprompt`` (synthesized at start-up) instead of silence."""
        self._begin(turn_id, TurnKind.VOICE)  # a turn of the user's all the same: older replies stop
        self.tracker.action(turn_id, Action.REPROMPT)
        text = self.config.output.reprompt.strip()
        if text and self.output is not None and self.tts is not None:
            self.tracker.record(turn_id).mark(Mark.FIRST_AUDIO, self.clock.position_ms())
            self._notice(self._say(turn_id, text), f"reprompt-{turn_id}")
        self.turns.cancel(turn_id)
        self.tracker.finish(turn_id, Outcome.REPROMPTED)

    def _intent(self, turn_id: int, intent: str | None, event: Event) -> None:
        """The intents stage matched (or not) the turn's words: on its record now; published
        once the turn is committed (at once if it is)."""
        if self.turns.is_cancelled(turn_id):
            return
        if self.tracker.is_open(turn_id):
            rec = self.tracker.record(turn_id)
            rec.intent, rec.handled_by = intent, "llm" if intent is None else "intent"
        if self.turns.is_held(turn_id):
            self._intended[turn_id] = event
            if intent is not None and self.endpointer is not None:
                self.endpointer.end_now(turn_id)  # a whole command: no need to wait for more
        else:
            self.events.publish(event)

    def _stop_others(self, turn_id: int) -> None:
        """ "Stop": every older reply in flight is cancelled, and the speaker falls silent."""
        for older in self.tracker.open_turns():
            if older < turn_id:
                self.cancel(older)
        if self.speaker is not None:
            self.speaker.interrupt()

    def _stop_word(self, turn_id: int, text: str) -> None:
        """The stop word over playback: every other turn in flight is cancelled, the speaker falls
        silent, ringing alarms stop; this turn ends unanswered (it is no turn of its own)."""
        self.turns.cancel(turn_id)
        self.tracker.discard(turn_id)
        self._no_speech(turn_id)
        stopped = self.cancel()
        if self.endpointer is not None:
            self.endpointer.end_now(turn_id)  # a paused utterance ends here: the next speech is new
        alarms = self.alarms.silence() if self.alarms is not None else 0
        if self.speaker is not None:
            self.speaker.interrupt()
        self.tracker.actions[Action.STOP_WORD] += 1
        _LOGGER.info("stop word %r: %d turn(s) stopped, %d alarm(s) silenced", text, len(stopped), alarms)
        self.events.publish(StopWord(text, self.clock.position_ms(), stopped, alarms))
        self._settle_state()

    async def announce(self, text: str) -> bool:
        """Speak ``text``, which belongs to no turn (a timer's alarm), through the output, after
        what it is playing; False where there is no output or voice. A failure raises."""
        tts, output = self.tts, self.output
        if tts is None or output is None:
            return False
        spoken = self._announced.get(text)
        if spoken is None:
            work = asyncio.to_thread(synthesize_all, tts, text)
            spoken = (await asyncio.wait_for(work, self.config.deadlines.tts_s), tts.sample_rate)
            self._announced = {**dict(list(self._announced.items())[-7:]), text: spoken}
        await output.play_notice(*spoken)
        return True

    def _apologise(self, turn_id: int) -> None:
        if self.output is None or self.tts is None or not self.config.output.apology.strip():
            return
        self._notice(self._say_sorry(turn_id), f"apology-{turn_id}")

    def _notice(self, work: Coroutine[Any, Any, object], name: str) -> None:
        """Play a notice in a task of its own, which ``settle`` waits for."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def settle(self) -> None:
        """Wait for apologies still being played (the output closes its sink after this)."""
        if self._notices:
            await asyncio.wait(list(self._notices), timeout=self.config.deadlines.output_s)

    async def _say_sorry(self, turn_id: int) -> None:
        """Speak the apology (``announce`` keeps it once synthesized); a failure is only logged."""
        if await self._say(turn_id, self.config.output.apology.strip()):
            self.tracker.actions[Action.APOLOGY_PLAYED] += 1

    async def _say(self, turn_id: int, text: str) -> bool:
        """``announce(text)`` for a turn that has ended; a failure is only logged."""
        try:
            return await self.announce(text)
        except Exception as err:  # the TTS itself may be what failed
            _LOGGER.warning("turn %d: %r could not be spoken: %r", turn_id, text, err)
            return False

    def _marked(self, turn_id: int, mark: str) -> None:
        self.budget.marked(turn_id, mark)
        if turn_id in self._stop_only:
            return  # heard only for the stop word: the assistant is not listening to a question
        if mark == Mark.SPEECH_START:
            marks = self.tracker.record(turn_id).marks if self.tracker.is_open(turn_id) else {}
            if Mark.ENDPOINT not in marks:  # unpaced input: the endpoint may be marked first
                self._set_state(State.LISTENING)
        elif mark == Mark.ENDPOINT or (mark == Mark.TRANSCRIPT and not self.turns.is_held(turn_id)):
            self._set_state(State.THINKING)  # a speculation is not: the user may go on
        elif mark == Mark.FIRST_AUDIO:
            self._set_state(State.SPEAKING)
        elif mark == Mark.DONE:
            self.activation.replied(time.monotonic())

    def _finished(self, rec: TurnRecord) -> None:
        self.budget.closed(rec.turn_id)
        self._intended.pop(rec.turn_id, None)
        info = self._info.pop(rec.turn_id, TurnInfo(TurnKind.VOICE))
        self._stop_only.discard(rec.turn_id)
        if rec.outcome == Outcome.ANSWERED:
            for span in self.budget.policy.over_budget(rec):
                self.tracker.actions[f"over_budget.{span}"] += 1
        self.turns.forget(rec.turn_id)
        if self.on_turn is not None:
            self.on_turn(rec)
        self.events.publish(TurnFinished(rec.turn_id, info.request_id, rec.to_json(), info.kind))
        if not self.tracker.open_turns():
            self._set_state(State.IDLE)

    def _settle_state(self) -> None:
        """Idle again where no turn is in flight (a transcript refused, no speech, the wake
        gate closed with no question)."""
        if not self.tracker.open_turns() and self.state in (State.LISTENING, State.THINKING):
            self._set_state(State.IDLE)

    def _set_state(self, state: State) -> None:
        if state != self.state:
            self.state = state
            self.events.publish(StateChanged(state, self.muted))
