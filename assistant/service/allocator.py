"""glibc's allocator set to give memory back, for a long-running daemon where memory is scarce.

By default: ``trim_when_idle`` gives the heaps' free pages back once the assistant has been idle
for a second (a task beside the pipeline, see ``Pipeline.helpers``); ``ASSISTANT_ALLOCATOR=glibc``
turns that off. A trim takes 2-10 ms and gives back 30-150 MB after a few turns; ``assistant bench
--soak 1000 --mqtt``: RSS at rest 566.7 MB after warm-up, 563.6 MB at the end.

Opt-in: ``ASSISTANT_ALLOCATOR=lean``. By default glibc raises its mmap threshold as large blocks
are freed (up to 32 MB), so the models' short-lived large buffers end up on heaps that only grow,
one per thread that allocated. ``tune()`` maps blocks of 128 KB and more (unmapped when freed),
trims at 128 KB and keeps two heaps, before any model loads. A setting the user gave in the
environment (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_ARENA_MAX``) is left
as given; where the C library is not glibc (bionic under Termux, musl) nothing is done.

Measured on the 2-core machine, default models, one run each (so rough):

- ``assistant bench --soak``: RSS 450 -> 471 MB over 404 turns (+4.6 % after warm-up) and
  441 -> 463 MB over 300 turns, against 800 -> 957 MB over 1,000 turns with glibc's defaults.
- ``assistant bench --limit 14``: peak RSS 757 MB against 1,122 MB, but e2e p50 311 ms against
  291, p95 810 against 572, and the LLM's wall tokens/s 53 against 81 (synthesis, which the LLM
  waits for, page-faults every fresh mapping). Hence not the default until that cost is gone.
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
SETTINGS = (
    (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", 128 * 1024),
    (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", 128 * 1024),
    (M_ARENA_MAX, "MALLOC_ARENA_MAX", 2),
)
"""(mallopt parameter, the environment variable that sets it, our value)."""


def tune() -> list[str]:
    """Apply ``SETTINGS`` where the environment does not; returns the variables set."""
    if os.environ.get("ASSISTANT_ALLOCATOR") != "lean":
        return []
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        _LOGGER.debug("no mallopt in this C library: the allocator keeps its defaults")
        return []
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = []
    for param, variable, value in SETTINGS:
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
