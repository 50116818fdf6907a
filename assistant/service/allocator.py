"""glibc's allocator, set for a long-running daemon: memory freed is given back.

By default glibc raises its mmap threshold as large blocks are freed (up to 32 MB), so the
models' short-lived large buffers (Whisper's features and encoder output, llama.cpp's batches,
the voice's tensors) end up on heaps that only grow, one heap per thread that allocated. Measured
with ``assistant bench --soak 300`` on the default models: RSS 800 MB after warm-up, growing ~20 %
over 1,000 turns, against 441 -> 463 MB with blocks of 128 KB and more mapped (and unmapped when
freed), a 128 KB trim threshold and two heaps.

``tune()`` sets these with ``mallopt`` before the models load. A setting the user gave in the
environment (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_ARENA_MAX``) is
left as given. Where the C library is not glibc (Android's bionic under Termux, musl) nothing is
done.
"""

from __future__ import annotations

import ctypes
import logging
import os

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
