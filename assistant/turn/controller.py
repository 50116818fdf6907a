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

The class is in four parts: this module (the channel, the commands, a turn's commit and end),
``stopping`` (cancel, barge-in, the stop word), ``notices`` (failures, the reprompt, the apology,
``announce``) and ``states`` (the state, the mute, the tracker's callbacks); ``peers`` declares
what it asks of the stages it holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from assistant.clock import StreamClock
from assistant.config import Config
from assistant.contracts import Speaker, Synthesizer
from assistant.errors import AssistantError
from assistant.events import (
    DeviceCommand,
    Event,
    EventBus,
    IntentNotRecognized,
    IntentRecognized,
    ReasoningText,
    ReplyChunk,
    ReplyFinished,
    State,
    TranscriptReady,
    WakeDetected,
)
from assistant.turn.activation import Activation
from assistant.turn.budget import BudgetKeeper
from assistant.turn.kinds import Action, Mark, Outcome, TurnKind
from assistant.turn.latency import LatencyTracker, TurnRecord
from assistant.turn.notices import Notices
from assistant.turn.peers import Alarms, Endpointer, NoticePlayer, TurnInfo, WakeGate
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
from assistant.turn.states import StateKeeper
from assistant.turn.stopping import Stopping

_LOGGER = logging.getLogger(__name__)

SENTENCE_ENDS = (".", "!", "?", "…")
PLAYING_SPAN_NS = 300_000_000
"""``playing`` looks this far back and ahead (the device's buffer) for audio heard."""


class TurnController(Stopping, Notices, StateKeeper):
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
            case SpeechBegan(turn_id, continues):
                self._speech_began(turn_id, continues)
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

    def reconfigure(self, config: Config) -> None:
        """A reloaded config's live keys: listen mode, budgets, the apology text on next start."""
        self.config = config
        awake = self.activation
        self.activation = Activation(config.listen)
        self.activation.adopt(awake)
        self.budget.reconfigure(config.latency)

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
