"""Output stage: ``AudioOut`` to the sink; marks ``first_audio``/``first_answer_audio``; ends turns.

A speculative turn's audio waits here until its endpoint is final (``Turns.release``) and is
dropped if the speculation is void. Acknowledgements (``play_ack``) go through the same lock, so
the answer follows an acknowledgement without overlap.

Marks are play times, not hand-over times: a sink such as a WAV file takes audio at once, but the
listener hears a turn's audio one piece after the other. So each turn keeps a play-out line: a
piece starts at the later of now and the end of the turn's audio before it. The answer after an
acknowledgement is marked when the acknowledgement has finished playing, and ``done`` when the
last piece has.
"""

from __future__ import annotations

import asyncio

from assistant.audio.sinks import AudioSink
from assistant.clock import StreamClock
from assistant.messages import AudioDone, AudioOut, Message
from assistant.stages.base import Queue, run_inbox
from assistant.turn.latency import LatencyTracker
from assistant.turn.registry import Turns


class OutputStage:
    """Hands audio to the sink in order; the last stage of the pipeline."""

    def __init__(self, sink: AudioSink, turns: Turns, tracker: LatencyTracker, clock: StreamClock) -> None:
        self.sink = sink
        self.turns = turns
        self.tracker = tracker
        self.clock = clock
        self._lock = asyncio.Lock()
        self._play_end: dict[int, float] = {}
        """Per turn: position (ms) at which the audio handed over so far has finished playing."""

    async def _write(self, turn_id: int, pcm: bytes, rate: int, *, answer: bool) -> None:
        async with self._lock:
            if self.turns.is_cancelled(turn_id) or not self.tracker.is_open(turn_id):
                self._play_end.pop(turn_id, None)
                return
            rec = self.tracker.record(turn_id)
            now = self.clock.position_ms()
            if answer and rec.answer_ready_ms is None:
                rec.answer_ready_ms = now
            start = max(now, self._play_end.get(turn_id, 0.0))
            length = len(pcm) / 2 / rate * 1000
            self._play_end[turn_id] = start + length
            rec.mark("first_audio", start)
            if answer:
                rec.mark("first_answer_audio", start)
                rec.reply_audio_ms += length
            await self.sink.write(pcm, rate)

    async def play_ack(self, turn_id: int, pcm: bytes, rate: int) -> bool:
        """Play an acknowledgement for a turn that has not been heard yet; False if too late."""
        rec = self.tracker.record(turn_id) if self.tracker.is_open(turn_id) else None
        if rec is None or "first_audio" in rec.marks:
            return False
        await self._write(turn_id, pcm, rate, answer=False)
        return True

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        async def handle(item: Message) -> None:
            if isinstance(item, AudioOut):
                if self.turns.is_held(item.turn_id) and not await self.turns.wait_released(item.turn_id):
                    return
                await self._write(item.turn_id, item.pcm, item.sample_rate, answer=item.answer)
            elif isinstance(item, AudioDone):
                if self.turns.is_held(item.turn_id) and not await self.turns.wait_released(item.turn_id):
                    return
                if not self.tracker.is_open(item.turn_id):
                    self._play_end.pop(item.turn_id, None)
                    return
                await self.sink.turn_done()
                rec = self.tracker.record(item.turn_id)
                played = self._play_end.pop(item.turn_id, 0.0)
                rec.mark("done", max(self.clock.position_ms(), played))
                answered = "first_answer_audio" in rec.marks or bool(rec.reply)
                self.tracker.finish(item.turn_id, "answered" if answered else "empty_reply")

        async def end() -> None:
            await self.sink.close()

        await run_inbox(inbox, outbox, self.turns, handle, end)
