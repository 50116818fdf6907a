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
from assistant.bench.noise import Samples, fade
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


STRETCH_ORDER = ("pink", "hum", "babble")
"""Within a stretch of one SNR, the noise kinds in this order (babble, speech itself, last)."""


def in_stretches(items: Sequence[CorpusItem]) -> list[CorpusItem]:
    """The items as the bench plays them: in stretches of one noise, loudest noise first (the
    lowest SNR), each noise kind together, the clean items last, each stretch in the given order.

    So the noise never rises out of silence, nor from one stretch to the next: it runs from the
    stream's first sample, steps down (or across, at a like level) from stretch to stretch, and
    fades out once, before the clean items. A noise that rises is what the VAD takes for speech."""
    snrs = sorted({i.snr_db for i in items if i.snr_db is not None})

    def stretch(item: CorpusItem) -> tuple[int, int]:
        if item.snr_db is None:
            return (len(snrs), 0)
        kind = STRETCH_ORDER.index(item.noise) if item.noise in STRETCH_ORDER else len(STRETCH_ORDER)
        return (snrs.index(item.snr_db), kind)

    return sorted(items, key=stretch)


def _gap_beds(after: Samples, before: Samples, gap: int, fade_in: int) -> Samples:
    """The noise under one gap: ``after`` (the bed continuing the item before it) from its start,
    ``before`` (the bed leading into the item after it) up to its end. Where they overlap, an
    equal-power cross-fade (one noise becomes the other at a steady level); where they do not,
    ``after`` fades out over its length and ``before`` fades in over ``fade_in`` samples."""
    out = np.zeros(gap, np.float32)
    a, b = after[:gap], before[-gap:] if before.size else before
    overlap = a.size + b.size - gap
    if a.size and b.size and overlap > 0:
        ramp = (np.arange(overlap) + 0.5) / overlap * (np.pi / 2)
        a_env, b_env = np.ones(a.size), np.ones(b.size)
        a_env[a.size - overlap :] = np.cos(ramp)
        b_env[:overlap] = np.sin(ramp)
        out[: a.size] += a * a_env.astype(np.float32)
        out[gap - b.size :] += b * b_env.astype(np.float32)
        return out
    if a.size:
        out[: a.size] += a * fade(a.size, 0, a.size)
    if b.size:
        out[gap - b.size :] += b * fade(b.size, min(fade_in, b.size))
    return out


def make_stream(
    items: Sequence[CorpusItem], gap_ms: float = 1000.0, fade_ms: float = BED_FADE_MS
) -> tuple[bytes, list[StreamPosition]]:
    """One 16 kHz int16 stream: the items in order with ``gap_ms`` between (none after the last).

    The gaps are silent but for the noisy items' beds. Between two noisy items, the first one's
    noise cross-fades into the second one's over the gap (their beds are each continuous with
    their item); after a noisy item and before a clean one, the noise fades out; before a noisy
    item after a clean one, its bed fades in over ``fade_ms`` (at most its length). A noisy first
    item is preceded by its whole bed at full level, as if the noise had been there before the
    stream. The items' own samples are unchanged. Returns the stream and, per item, where it, its
    speech and its pause lie in the stream (ms).
    """
    gap = round(gap_ms * SAMPLE_RATE / 1000)
    fade_in = round(fade_ms * SAMPLE_RATE / 1000)
    lead = pcm16_to_float(items[0].bed_before) if items and items[0].bed_before else np.zeros(0, np.float32)
    sizes = [len(item.pcm) // 2 for item in items]
    total = lead.size + sum(sizes) + gap * max(len(items) - 1, 0)
    beds = np.zeros(total, np.float32)
    beds[: lead.size] = lead
    out = np.zeros(total, "<i2")
    positions: list[StreamPosition] = []
    at = lead.size
    for i, (item, size) in enumerate(zip(items, sizes, strict=True)):
        out[at : at + size] = np.frombuffer(item.pcm, dtype="<i2")
        if i < len(items) - 1:
            after, before = pcm16_to_float(item.bed_after), pcm16_to_float(items[i + 1].bed_before)
            beds[at + size : at + size + gap] = _gap_beds(after, before, gap, fade_in)
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
    at = lead.size
    for size in sizes:
        quiet[at : at + size] = False
        at += size + gap
    out[quiet] = np.frombuffer(float_to_pcm16(beds[quiet]), dtype="<i2")
    return out.tobytes(), positions
