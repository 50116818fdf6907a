"""The bench's input: corpus items one after another in one stream, with noise beds in the gaps.

A noise that starts abruptly is heard as speech and starts a turn by itself (barging in on the
reply still playing). So before a noisy item, the gap carries its bed (the same noise, continuous
into the item's first sample) faded in, and after it, its bed faded out: the noise comes and goes
as a room's does, and the items' own samples, and so the true bounds of their speech, are
unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from assistant.audio.convert import float_to_pcm16, pcm16_to_float
from assistant.bench.noise import fade
from assistant.messages import SAMPLE_RATE

if TYPE_CHECKING:
    from assistant.bench.corpus import CorpusItem

BED_FADE_MS = 3000.0
"""``make_stream`` fades a bed in over this long (a raised cosine; at most the bed's length). On
the corpus's 61 first takes, in 4 s gaps, the VAD started no turn on a bed faded in over 3 s; over
1.5 s, 12 beds started one, as many as when the noise starts abruptly (the VAD's noise model, and
its floor gate's 1.5 s memory, follow a slow rise but not a quick one)."""


@dataclass(frozen=True)
class StreamPosition:
    """Where one item lies inside a stream made by ``make_stream``; all in ms from the stream's start."""

    item_id: str
    start_ms: float
    """First sample of the item (its lead silence)."""
    speech_start_ms: float
    speech_end_ms: float
    end_ms: float
    """End of the item (after its trail silence)."""
    pause_start_ms: float | None = None
    pause_end_ms: float | None = None


def make_stream(
    items: Sequence[CorpusItem], gap_ms: float = 1000.0, fade_ms: float = BED_FADE_MS
) -> tuple[bytes, list[StreamPosition]]:
    """One 16 kHz int16 stream: the items in order with ``gap_ms`` between (none after the last).

    The gaps are silent but for the noisy items' beds: before a noisy item, its bed (the same
    noise, continuous into the item) under the end of the gap, faded in over ``fade_ms`` (at most
    its length); after one, its bed faded out. The items' own samples are unchanged. Returns the
    stream and, per item, where it, its speech and its pause lie in the stream (ms).
    """
    gap = round(gap_ms * SAMPLE_RATE / 1000)
    sizes = [len(item.pcm) // 2 for item in items]
    total = sum(sizes) + gap * max(len(items) - 1, 0)
    beds = np.zeros(total, np.float32)
    out = np.zeros(total, "<i2")
    positions: list[StreamPosition] = []
    at = 0
    for i, (item, size) in enumerate(zip(items, sizes, strict=True)):
        if i:
            bed = pcm16_to_float(item.bed_before)[-gap:] if item.bed_before else np.zeros(0, np.float32)
            if bed.size:
                fade_in = min(round(fade_ms * SAMPLE_RATE / 1000), bed.size)
                beds[at - bed.size : at] += bed * fade(bed.size, fade_in)
        out[at : at + size] = np.frombuffer(item.pcm, dtype="<i2")
        if i < len(items) - 1 and item.bed_after:
            after = pcm16_to_float(item.bed_after)[:gap]
            beds[at + size : at + size + after.size] += after * fade(after.size, 0, after.size)
        start_ms = at * 1000.0 / SAMPLE_RATE
        positions.append(
            StreamPosition(
                item_id=item.id, start_ms=start_ms, speech_start_ms=start_ms + item.speech_start_ms,
                speech_end_ms=start_ms + item.speech_end_ms, end_ms=(at + size) * 1000.0 / SAMPLE_RATE,
                pause_start_ms=None if item.pause_start_ms is None else start_ms + item.pause_start_ms,
                pause_end_ms=None if item.pause_end_ms is None else start_ms + item.pause_end_ms,
            )
        )  # fmt: skip
        at += size + gap
    quiet = np.ones(total, bool)
    at = 0
    for size in sizes:
        quiet[at : at + size] = False
        at += size + gap
    out[quiet] = np.frombuffer(float_to_pcm16(beds[quiet]), dtype="<i2")
    return out.tobytes(), positions
