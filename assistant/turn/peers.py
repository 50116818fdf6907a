"""What the turn controller asks of the stages and helpers it holds (declared, never probed), and
what it keeps of how a turn began."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from assistant.turn.budget import AckPlayer
from assistant.turn.kinds import TurnKind


class Endpointer(Protocol):
    """What the controller asks of the VAD stage."""

    muted: bool

    def transcribed(self, turn_id: int, text: str) -> None:
        """The speculative transcript: the endpointer ends the turn sooner when it reads as
        finished, and holds it when it ends on a word that leaves it open."""

    def end_now(self, turn_id: int) -> None:
        """The speculative transcript is a recognised command: end the turn now."""

    def forget_last(self, turn_id: int) -> None:
        """``turn_id`` stands alone: speech soon after its end does not continue it."""


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
