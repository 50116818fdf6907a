"""Output stage: ``AudioOut`` to the sink; reports what played and when each turn is done.

A speculative turn's audio waits here until its endpoint is final (``Turns.release``) and is
dropped if the speculation is void. Acknowledgements and holding phrases (``play_ack``) and apologies
(``play_notice``) go through the same lock, so nothing overlaps.

Marks are play times, not hand-over times: a sink such as a WAV file takes audio at once, but the
listener hears a turn's audio one piece after the other. So each turn keeps a play-out line: a
piece starts at the later of now and the end of the turn's audio before it. The answer after an
acknowledgement is marked when the acknowledgement has finished playing, and ``done`` when the
last piece has. A write that overruns ``deadlines.output_s`` fails the turn (``stage_timeout``).
"""

from __future__ import annotations

import asyncio
import logging

from assistant.audio.sinks import AudioSink
from assistant.config import DeadlineConfig
from assistant.errors import StageTimeoutError
from assistant.messages import AudioDone, AudioOut, Message
from assistant.stages.base import Queue, run_inbox
from assistant.turn.reports import Finished, Played, TurnChannel

_LOGGER = logging.getLogger(__name__)


class OutputStage:
    """Hands audio to the sink in order; the last stage of the pipeline."""

    name = "output"

    def __init__(
        self, sink: AudioSink, channel: TurnChannel, deadlines: DeadlineConfig | None = None
    ) -> None:
        self.sink = sink
        self.channel = channel
        self.deadlines = deadlines or DeadlineConfig()
        self._lock = asyncio.Lock()
        self._play_end: dict[int, float] = {}
        """Per turn: position (ms) at which the audio handed over so far has finished playing."""

    async def _sink_write(self, pcm: bytes, rate: int) -> None:
        try:
            async with asyncio.timeout(self.deadlines.output_s):
                await self.sink.write(pcm, rate)
        except TimeoutError:
            raise StageTimeoutError(
                "output", f"the audio output took longer than {self.deadlines.output_s:g} s to take audio"
            ) from None

    async def _write(self, turn_id: int, pcm: bytes, rate: int, *, answer: bool) -> None:
        channel = self.channel
        async with self._lock:
            if channel.turns.is_cancelled(turn_id) or not channel.is_open(turn_id):
                self._play_end.pop(turn_id, None)
                return
            if turn_id not in self._play_end:  # a failed or cancelled turn's AudioDone never comes
                for gone in [t for t in self._play_end if channel.turns.is_cancelled(t)]:
                    del self._play_end[gone]
            now = channel.clock.position_ms()
            start = max(now, self._play_end.get(turn_id, 0.0))
            length = len(pcm) / 2 / rate * 1000
            self._play_end[turn_id] = start + length
            channel.report(Played(turn_id, start, length, now, answer))
            await self._sink_write(pcm, rate)

    async def play_ack(self, turn_id: int, pcm: bytes, rate: int, *, answered_only: bool = False) -> bool:
        """Play an acknowledgement for a turn that has not been heard yet (``answered_only``: a
        holding phrase, after an acknowledgement, for a turn whose answer has not begun, which
        the budget keeper has checked); False if too late."""
        if not self.channel.is_open(turn_id) or (self.channel.heard(turn_id) and not answered_only):
            return False
        await self._write(turn_id, pcm, rate, answer=False)
        return True

    async def play_notice(self, pcm: bytes, rate: int) -> None:
        """Play audio that belongs to no live turn (an apology for a failed one); never raises."""
        try:
            async with self._lock:
                await self._sink_write(pcm, rate)
                await self.sink.turn_done()
        except Exception as err:
            _LOGGER.warning("output: a notice could not be played: %s", err)

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        turns = self.channel.turns

        async def handle(item: Message) -> None:
            if isinstance(item, AudioOut):
                if turns.is_held(item.turn_id) and not await turns.wait_released(item.turn_id):
                    return
                await self._write(item.turn_id, item.pcm, item.sample_rate, answer=item.answer)
            elif isinstance(item, AudioDone):
                if turns.is_held(item.turn_id) and not await turns.wait_released(item.turn_id):
                    return
                played = self._play_end.pop(item.turn_id, 0.0)
                if not self.channel.is_open(item.turn_id):
                    return
                await self.sink.turn_done()
                self.channel.report(Finished(item.turn_id, max(self.channel.clock.position_ms(), played)))

        async def end() -> None:
            await self.channel.settle()  # an apology still playing is heard to its end
            await self.sink.close()

        await run_inbox(inbox, outbox, self.channel, handle, end, stage=self.name)
