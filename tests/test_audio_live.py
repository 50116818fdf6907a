"""The shared live-audio parts without a device: ring overflow, conversion, backoff, playout."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from assistant.audio.live import Backoff, ByteRing, Converter, LiveSource, Playout
from assistant.clock import StreamClock
from assistant.messages import AudioIn, EndOfStream, Message


def test_ring_drops_the_oldest_and_counts() -> None:
    ring = ByteRing(8)
    ring.write(b"\x01\x00\x02\x00\x03\x00")
    ring.write(b"\x04\x00\x05\x00")
    assert ring.read_all() == b"\x02\x00\x03\x00\x04\x00\x05\x00"
    assert (ring.overflows, ring.dropped_bytes) == (1, 2)


def test_converter_takes_44k1_stereo_float_in_odd_pieces() -> None:
    rate = 44_100
    t = np.arange(rate) / rate
    stereo = np.stack([np.sin(2 * np.pi * 440 * t)] * 2, axis=1).astype(np.float32) * 0.5
    raw = stereo.tobytes()
    conv = Converter(rate, 2, "float32")
    out = b"".join(conv.convert(raw[i : i + 999]) for i in range(0, len(raw), 999))
    samples = np.frombuffer(out, dtype="<i2")
    assert abs(samples.size - 16_000) < 500  # soxr holds a few ms back until flushed
    spectrum = np.abs(np.fft.rfft(samples[2000:10000].astype(np.float32)))
    assert abs(np.argmax(spectrum) * 16_000 / 8000 - 440) < 5


def test_backoff_grows_to_its_cap_and_resets() -> None:
    backoff = Backoff(initial_s=0.25, max_s=1.0)
    assert [backoff.next() for _ in range(5)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    backoff.reset()
    assert backoff.next() == 0.25


class ThreadSource(LiveSource):
    """A fake device: a thread pushes numbered 20 ms blocks as fast as it can."""

    name = "fake"

    def __init__(self, blocks: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.blocks = blocks
        self.done = threading.Event()

    async def _session(self) -> None:
        self._begin(16_000)

        def produce() -> None:
            for n in range(self.blocks):
                self._push(np.full(320, n, dtype="<i2").tobytes())
            self.done.set()

        thread = threading.Thread(target=produce, name="fake-device")
        thread.start()
        await asyncio.to_thread(thread.join)
        await asyncio.Event().wait()  # the device stays open


async def test_a_slow_consumer_loses_the_oldest_audio_never_blocks_the_device() -> None:
    source = ThreadSource(500, buffer_ms=200)  # 10 s of audio pushed at once into a 200 ms ring
    outbox: asyncio.Queue[Message] = asyncio.Queue(5)  # and nobody reads the outbox for a while
    task = asyncio.create_task(source.run(outbox, StreamClock(realtime=True)), name="source")
    await asyncio.to_thread(source.done.wait, 5)
    assert source.done.is_set()  # the producer was never held back
    got: list[Message] = []
    while not got or np.frombuffer(got[-1].pcm, dtype="<i2")[0] != 499:  # type: ignore[attr-defined]
        got.append(await asyncio.wait_for(outbox.get(), 2))
    source.stop()
    while not isinstance(item := await outbox.get(), EndOfStream):
        got.append(item)
    await task
    assert source.overflows > 0 and source.dropped_ms > 9000
    numbers = [int(np.frombuffer(m.pcm, dtype="<i2")[0]) for m in got if isinstance(m, AudioIn)]
    assert numbers[-1] == 499  # the newest audio survived
    starts = [m.start_ms for m in got if isinstance(m, AudioIn)]
    assert np.allclose(np.diff(starts), 20.0)
    # arrival stamps: pieces read from the ring together are 20 ms apart, none in the future
    arrived = np.array([m.arrived_ns for m in got if isinstance(m, AudioIn)])
    assert arrived.min() > 0 and arrived.max() <= time.monotonic_ns()
    assert np.median(np.diff(arrived)) == 20_000_000


def test_playout_level_and_interrupt() -> None:
    playout = Playout(16_000)
    tone = (np.sin(np.arange(3200) / 5) * 16000).astype("<i2").tobytes()
    playout.add(tone)
    assert playout.busy() and playout.queued_ms == 200
    block = playout.pull(320)
    assert len(block) == 640 and 0.3 < playout.level() < 0.4
    playout.clear()
    assert not playout.busy() and playout.level() == 0.0
    assert playout.pull(320) == bytes(640)


def test_playout_peak_spans_the_blocks_heard_in_a_window() -> None:
    playout = Playout(16_000)
    loud = (np.sin(np.arange(320) / 5) * 16000).astype("<i2").tobytes()
    playout.add(loud + bytes(640))
    first = time.monotonic_ns() + 1_000_000_000  # heard a second from now, for 20 ms each
    playout.pull(320, delay_ns=1_000_000_000)
    playout.pull(320, delay_ns=1_000_000_000 + 20_000_000)  # silence after the tone
    ms = 1_000_000
    assert 0.3 < playout.peak(first - 100 * ms, first + 5 * ms) < 0.4  # overlaps the tone
    assert playout.peak(first + 25 * ms, first + 35 * ms) == 0.0  # only the silent block
    assert playout.peak(first - 100 * ms, first - 50 * ms) == 0.0  # before anything was heard


def test_a_paused_playout_plays_silence_and_keeps_its_queue() -> None:
    playout = Playout(16_000)
    tone = (np.sin(np.arange(3200) / 5) * 16000).astype("<i2").tobytes()
    playout.add(tone)
    assert playout.pull(320) == tone[:640]
    playout.paused = True
    assert playout.pull(320) == bytes(640) and playout.busy() and playout.queued_ms == 180
    playout.paused = False
    assert playout.pull(320) == tone[640:1280]
