"""Output stage: ``AudioOut`` to the sink; marks ``first_audio``/``first_answer_audio``; ends turns."""

from __future__ import annotations

from ..audio.sinks import AudioSink
from ..clock import StreamClock
from ..latency import LatencyTracker
from ..messages import AudioDone, AudioOut, Message
from .base import Queue, Turns, run_inbox


class OutputStage:
    """Hands audio to the sink in order; the last stage of the pipeline."""

    def __init__(self, sink: AudioSink, turns: Turns, tracker: LatencyTracker, clock: StreamClock) -> None:
        self.sink = sink
        self.turns = turns
        self.tracker = tracker
        self.clock = clock

    async def run(self, inbox: Queue, outbox: Queue) -> None:
        async def handle(item: Message) -> None:
            if isinstance(item, AudioOut):
                rec = self.tracker.record(item.turn_id)
                now = self.clock.position_ms()
                rec.mark("first_audio", now)
                if item.answer:
                    rec.mark("first_answer_audio", now)
                    rec.reply_audio_ms += len(item.pcm) / 2 / item.sample_rate * 1000
                await self.sink.write(item.pcm, item.sample_rate)
            elif isinstance(item, AudioDone):
                await self.sink.turn_done()
                rec = self.tracker.record(item.turn_id)
                rec.mark("done", self.clock.position_ms())
                answered = "first_answer_audio" in rec.marks or bool(rec.reply)
                self.tracker.finish(item.turn_id, "answered" if answered else "empty_reply")
                self.turns.forget(item.turn_id)

        async def end() -> None:
            await self.sink.close()

        await run_inbox(inbox, outbox, self.turns, handle, end)
