"""What stages tell the turn controller: one typed channel, no callbacks.

Queue items (``messages``) carry a turn's data from stage to stage; *reports* carry what happened
to the turn to the one object that owns its lifecycle (``turn.controller.TurnController``): marks,
speculation and commit, the reply's pieces, actions, failures. A stage holds a ``TurnChannel``
and calls ``report(...)``; it asks the channel only what it must know to go on (is the turn still
open, may this transcript be answered). See ``docs/architecture.md``, "The path of a turn".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from assistant.clock import StreamClock
from assistant.errors import AssistantError
from assistant.turn.kinds import Mark
from assistant.turn.registry import Turns


@dataclass(frozen=True, slots=True)
class Report:
    """Base of every report."""


@dataclass(frozen=True, slots=True)
class VoiceSuspected(Report):
    """VAD: a voice may be starting over the reply (True: pause the speaker) or it was not (False)."""

    suspect: bool


@dataclass(frozen=True, slots=True)
class WakeHeard(Report):
    """Wake stage: the wake word model heard its word (published as ``WakeDetected``; the
    assistant is ``listening`` from then on, if it was idle)."""

    wake_word: str
    """The word as the model names it (``Okay Nabu``)."""
    model: str
    """The model (``okay_nabu``, or a file's stem)."""
    at_ms: float
    """Where in the input it was heard (input timeline, ms)."""
    probability: float
    """The model's smoothed probability (0-1)."""


@dataclass(frozen=True, slots=True)
class WakeClosed(Report):
    """Wake stage: the gate has closed again (no question came, or the follow-up window passed);
    a ``listening`` assistant with no turn in flight is ``idle`` again."""


@dataclass(frozen=True, slots=True)
class TurnReport(Report):
    """Base of the reports about one turn."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class SpeechBegan(TurnReport):
    """VAD: speech started a turn (barge-in acts on it)."""

    continues: int = 0
    """The turn this speech continues (it came back within ``vad.continue_ms`` of that turn's end;
    this turn's utterance holds both), 0: none."""


@dataclass(frozen=True, slots=True)
class SpeculationVoid(TurnReport):
    """VAD: speech resumed after a pause; the speculation on this turn is void."""

    next_turn: int = 0
    """The id the speech goes on under (0: not given)."""


@dataclass(frozen=True, slots=True)
class SpeechDropped(TurnReport):
    """VAD: the turn ended with too little speech (a cough), or only the wake word: it never was one."""


@dataclass(frozen=True, slots=True)
class EndpointFinal(TurnReport):
    """VAD: the endpoint of this turn is final."""

    speech_end_ms: float
    """Where speech ended, on the input timeline (ms)."""
    endpoint_ms: float
    """Where the turn was committed as over (ms)."""


@dataclass(frozen=True, slots=True)
class Marked(TurnReport):
    """A latency mark was passed."""

    mark: Mark
    at_ms: float
    """Input-timeline position, ms."""


@dataclass(frozen=True, slots=True)
class NoSpeech(TurnReport):
    """ASR: the utterance held no speech (noise, hum); the turn never was one."""


@dataclass(frozen=True, slots=True)
class Unheard(TurnReport):
    """ASR: no usable transcript by ``latency.transcript_ms`` (the words were unusable, or the
    transcription overran): the user is asked to say it again."""

    reason: str
    """``late`` (the transcription was abandoned) or the short window's rejection reason."""


@dataclass(frozen=True, slots=True)
class Generated(TurnReport):
    """LLM: a piece of answer text (never reasoning)."""

    text: str


@dataclass(frozen=True, slots=True)
class Reasoning(TurnReport):
    """LLM: a piece of a reasoning model's thinking (never spoken)."""

    text: str


@dataclass(frozen=True, slots=True)
class Replied(TurnReport):
    """LLM: the whole answer text, once generated."""

    text: str


@dataclass(frozen=True, slots=True)
class ActionTaken(TurnReport):
    """A named action (``turn.kinds.Action``, e.g. ``thinking_cut``) was taken on the turn."""

    action: str


@dataclass(frozen=True, slots=True)
class ChunkReady(TurnReport):
    """Chunker: a speakable piece of the reply goes to TTS."""

    text: str
    index: int


@dataclass(frozen=True, slots=True)
class ReplyComplete(TurnReport):
    """Chunker: the reply's text is complete."""

    text: str
    finish_reason: str


@dataclass(frozen=True, slots=True)
class FirstChunk(TurnReport):
    """TTS: synthesis of the turn's first chunk began; its audio is expected in ``expected_ms``."""

    expected_ms: float


@dataclass(frozen=True, slots=True)
class Played(TurnReport):
    """Output: audio of the turn was handed to the sink."""

    start_ms: float
    """When it starts playing (input timeline, ms): after what the turn already played."""
    length_ms: float
    handed_ms: float
    """When it was handed over (ms)."""
    answer: bool
    """False for an acknowledgement."""


@dataclass(frozen=True, slots=True)
class Finished(TurnReport):
    """Output: the turn's last audio has played (at ``done_ms``)."""

    done_ms: float


@dataclass(frozen=True, slots=True)
class Failed(TurnReport):
    """A stage failed on this turn (its error boundary caught it)."""

    error: AssistantError
    stage: str


@dataclass(frozen=True, slots=True)
class Intended(TurnReport):
    """Intents: the transcript matched a command, which answers it without the LLM. Published
    (``IntentRecognized``) once the turn is committed; a voided speculation publishes nothing."""

    intent: str
    slots: dict[str, Any]
    """Slot name -> value, JSON-able."""
    text: str
    """The words matched."""


@dataclass(frozen=True, slots=True)
class NotIntended(TurnReport):
    """Intents: the transcript matched no command; the LLM answers it."""

    text: str


@dataclass(frozen=True, slots=True)
class Commanded(TurnReport):
    """Intents: a committed command switches a declared device (published as ``DeviceCommand``)."""

    device: str
    topic: str
    payload: str


@dataclass(frozen=True, slots=True)
class StopWordHeard(TurnReport):
    """ASR: a short utterance spoken over playback is the stop word ("stop", "cancel", "be
    quiet"...): the reply or alarm playing stops, and this turn ends unanswered."""

    text: str
    """What was heard."""


@dataclass(frozen=True, slots=True)
class StopAsked(TurnReport):
    """Intents: a committed "stop"/"never mind": every other reply in flight is cancelled."""


R = TypeVar("R", bound=Report)


class TurnChannel(Protocol):
    """What a stage holds: the turn registry, the clock, and the controller's ear."""

    turns: Turns
    clock: StreamClock

    def report(self, report: Report) -> None:
        """Tell the controller what happened; never blocks, never raises for a closed turn."""

    def admit(self, turn_id: int, text: str) -> str | None:
        """ASR asks: the words to answer for this transcript (a wake phrase removed), or None
        when it is not for the assistant."""

    def is_open(self, turn_id: int) -> bool:
        """The turn is still in flight (not finished, cancelled or dropped)."""

    def heard(self, turn_id: int) -> bool:
        """Some audio of the turn (an acknowledgement, or the answer) has started playing."""

    async def settle(self) -> None:
        """Wait for what the controller still plays outside any turn (an apology)."""


class ReportLog:
    """A ``TurnChannel`` that only records: for running one stage on its own (the bench's
    endpointing baseline, tests). Every transcript is admitted; no turn is ever heard."""

    def __init__(self, clock: StreamClock | None = None, turns: Turns | None = None) -> None:
        self.turns = turns or Turns()
        self.clock = clock or StreamClock(realtime=False)
        self.reports: list[Report] = []

    def report(self, report: Report) -> None:
        self.reports.append(report)

    def admit(self, turn_id: int, text: str) -> str | None:
        return text

    def is_open(self, turn_id: int) -> bool:
        return not self.turns.is_cancelled(turn_id)

    def heard(self, turn_id: int) -> bool:
        return False

    async def settle(self) -> None:
        return None

    def of(self, kind: type[R]) -> list[R]:
        """The reports of one type, in order."""
        return [r for r in self.reports if isinstance(r, kind)]
