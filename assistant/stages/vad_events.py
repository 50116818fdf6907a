"""The VAD stage's translation of the segmenter's events into messages and reports: a turn's id,
its speculation held or voided, its ``Utterance``, its end. A part of ``VadStage`` (``stages/vad.py``)."""

from __future__ import annotations

import logging

from assistant.config import VadConfig
from assistant.endpointing.boundaries import Dropped, Ended, Paused, Resumed, SegmenterEvent, Started
from assistant.messages import Message, Resumption, SpeechStarted, Utterance
from assistant.turn.registry import Turns
from assistant.turn.reports import EndpointFinal, SpeculationVoid, SpeechBegan, SpeechDropped, TurnChannel

_LOGGER = logging.getLogger("assistant.stages.vad")  # one name for the stage's lines


class SegmenterEvents:
    """Turns the segmenter's events into the stage's messages (mixed into ``VadStage``)."""

    config: VadConfig
    channel: TurnChannel
    _turns: Turns
    _turn_id: int | None
    _last_turn: int
    _origin_ms: float | None
    _speech_start_ms: float
    _progress_at: float
    _speculating: bool
    _over_playback: bool
    _played_frame: int
    frames: int
    speculations: int
    discarded: int
    dropped: int
    utterances: int
    truncated: int

    _paused_pcm: bytes

    def _translate(self, events: list[SegmenterEvent]) -> list[Message]:
        origin = self._origin_ms or 0.0
        messages: list[Message] = []
        for event in events:
            if isinstance(event, Started):
                self._turn_id = self._turns.new_id()
                window = 2 * -(-self.config.start_ms // self.config.frame_ms)
                self._over_playback = self.frames - 1 - self._played_frame <= window
                continues = self._last_turn if event.continues else 0
                if continues:
                    _LOGGER.info(
                        "turn %d continues turn %d: speech came back after its end", self._turn_id, continues
                    )
                self.channel.report(SpeechBegan(self._turn_id, continues))
                self._speech_start_ms = origin + event.start_ms
                self._progress_at = event.start_ms
                _LOGGER.debug("turn %d: speech started at %.0f ms", self._turn_id, self._speech_start_ms)
                messages.append(SpeechStarted(turn_id=self._turn_id, start_ms=self._speech_start_ms))
                continue
            turn_id = self._turn_id
            assert turn_id is not None, "segmenter reported on a turn it never started"
            if isinstance(event, Paused):
                self._speculating = True
                self.speculations += 1
                self._turns.hold(turn_id)
                messages.append(self._utterance(turn_id, event, origin + event.speech_end_ms, True))
                self._paused_pcm = event.pcm  # for the turn model, if the words leave it to it
                continue
            self._paused_pcm = b""  # the pause is over, whatever comes
            if isinstance(event, Resumed):
                # the speculation is void: drop everything of it; the speech goes on as a new turn
                self.discarded += 1
                self._speculating = False
                self._turns.cancel(turn_id)
                self._turn_id = self._turns.new_id()
                self.channel.report(SpeculationVoid(turn_id, self._turn_id))
                messages.append(SpeechStarted(turn_id=self._turn_id, start_ms=self._speech_start_ms))
                continue
            self._turn_id = None
            speculated, self._speculating = self._speculating, False
            if isinstance(event, Dropped):
                self.dropped += 1
                _LOGGER.info("turn %d dropped: %s", turn_id, event.reason)
                self._turns.cancel(turn_id)
                self.channel.report(SpeechDropped(turn_id))
            elif isinstance(event, Ended):
                self._last_turn = turn_id
                silence, why = event.endpoint_ms - event.speech_end_ms, event.judged
                _LOGGER.info("turn %d: endpoint after %.0f ms of silence (%s)", turn_id, silence, why)
                self.utterances += 1
                self.truncated += event.truncated
                if not speculated:
                    messages.append(self._utterance(turn_id, event, origin + event.endpoint_ms, False))
                self.channel.report(
                    EndpointFinal(turn_id, origin + event.speech_end_ms, origin + event.endpoint_ms)
                )
        return messages

    def _utterance(self, turn_id: int, event: Ended | Paused, at_ms: float, speculative: bool) -> Utterance:
        origin = self._origin_ms or 0.0
        return Utterance(
            turn_id=turn_id,
            pcm=event.pcm,
            speech_start_ms=origin + event.speech_start_ms,
            speech_end_ms=origin + event.speech_end_ms,
            endpoint_ms=at_ms,
            truncated=isinstance(event, Ended) and event.truncated,
            speculative=speculative,
            over_playback=self._over_playback,
            resumed=None
            if event.resumed_ms is None
            else Resumption(origin + event.resumed_ms, event.resumed_at),
        )
