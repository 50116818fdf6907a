"""glibc's allocator set to give memory back, for a long-running daemon where memory is scarce.

glibc raises its mmap threshold as large blocks are freed (up to 32 MB), so the models'
short-lived large buffers (Whisper's full-window attention, 50 MB a head's worth; the voice's
layers, in proportion to the audio made at once) end up on heaps that only grow, one per thread
that allocated. Three levels, by ``ASSISTANT_ALLOCATOR``:

- default: ``tune()`` fixes the mmap threshold at 1 MB and caps the heaps at two before any model
  loads (blocks of 1 MB and more are mapped and unmapped when freed; smaller ones stay on the heaps,
  which cost no page faults; every thread shares those two heaps instead of glibc's up to 8 per core,
  each keeping what its thread freed), the voice trims the heaps after each text it speaks
  (``PiperEngine(after=trim)``) and ``trim_when_idle`` gives the heaps' free pages back once the
  assistant has been idle for a second (a task beside the pipeline, see ``Pipeline.helpers``). A
  trim takes 2-10 ms.
- ``lean``: blocks of 128 KB and more mapped, trims at 128 KB, two heaps: the least memory, at a
  cost in synthesis (every fresh mapping page-faults).
- ``glibc``: glibc's own defaults, no trims.

A setting the user gave in the environment (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_ARENA_MAX``) is left as given; where the C library is not glibc (bionic under Termux,
musl) nothing is done.

Measured on the 2-core machine, default models, peak RSS of ``assistant run`` over the stream of
``assistant bench --write-stream`` (61 items, 392 s, in real time; one run each, the machine shared,
so within about 15 MB): a 4 MB threshold 631.6 MB; 4 MB and two heaps 617.5 MB; 1 MB and two heaps
600.5, 609.6 and 601.3 MB (three runs), at 2.6-5.9 million more page faults over the run (5-19 s
more system time); 512 KB and two heaps 601.3 MB. piper alone (4 texts of 30-110 characters, 3
times, in 90-character pieces): peak 259-266 MB at 4 MB, 250-254 MB at 1 MB and two heaps, 242-245
MB at 512 KB, 235 MB ``lean``; page faults +10 %, +20 % and +40 % against 4 MB (CPU time within the
machine's noise, 670-840 ms a text). Earlier, on the previous corpus: glibc's defaults 812-864 MB;
``assistant bench --soak`` RSS at rest 566.7 MB after warm-up, 563.6 MB after 1,000 turns with the
idle trim.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os

from assistant.events import Event, State, StateChanged

_LOGGER = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
SETTINGS = {
    "default": (
        (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", 1 << 20),
        (M_ARENA_MAX, "MALLOC_ARENA_MAX", 2),
    ),
    "lean": (
        (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", 128 * 1024),
        (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", 128 * 1024),
        (M_ARENA_MAX, "MALLOC_ARENA_MAX", 2),
    ),
}
"""Per ``ASSISTANT_ALLOCATOR``: (mallopt parameter, the environment variable that sets it, our value)."""


def tune() -> list[str]:
    """Apply the ``SETTINGS`` of ``ASSISTANT_ALLOCATOR`` (unset: ``default``) where the environment
    does not; returns the variables set."""
    settings = SETTINGS.get(os.environ.get("ASSISTANT_ALLOCATOR") or "default", ())
    if not settings:
        return []
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        _LOGGER.debug("no mallopt in this C library: the allocator keeps its defaults")
        return []
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = []
    for param, variable, value in settings:
        if variable not in os.environ and mallopt(param, value) == 1:
            applied.append(variable)
    return applied


def trims() -> bool:
    """True unless ``ASSISTANT_ALLOCATOR=glibc`` leaves glibc entirely to itself (no idle trims)."""
    return os.environ.get("ASSISTANT_ALLOCATOR") != "glibc"


IDLE_TRIM_S = 1.0
"""How long the assistant must have been idle before the heaps are trimmed."""


def trim() -> bool:
    """Give the heaps' free pages back to the system (glibc's ``malloc_trim(0)``, which also returns
    whole free pages inside a heap, not only at its top); False where the C library has none."""
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    malloc_trim(0)
    return True


async def trim_when_idle(states: asyncio.Queue[Event], idle_s: float = IDLE_TRIM_S) -> None:
    """Trim the heaps (``trim``, in a thread) once the assistant has been idle for ``idle_s``.

    ``states`` is an ``EventBus`` subscription: a turn's buffers, freed when it ends, are given
    back while nobody waits for an answer, so a long-running daemon's RSS does not creep up with
    the heaps' free pages. Each idle spell trims once; a state change cancels a pending trim."""
    idle = False
    while True:
        try:
            event = await (asyncio.wait_for(states.get(), idle_s) if idle else states.get())
        except TimeoutError:
            idle = False
            if not await asyncio.to_thread(trim):
                return  # not glibc: nothing to do
            continue
        if isinstance(event, StateChanged):
            idle = event.state == State.IDLE
