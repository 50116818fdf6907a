"""Sharing a small machine's cores between the LLM and speech synthesis: synthesis first.

On two cores the LLM's decoding thread and piper's ONNX session slow each other down: the chunk
being synthesized is what the listener waits for, while the LLM already writes several times
faster than the reply is spoken. So while a chunk is synthesized the LLM waits between tokens
(``wait_turn``), and piper may use every core. The wait is bounded (``max_wait_s``) and ends at
once when the turn is cancelled, so the LLM can never be starved or hang.

``waits`` and ``waited_s`` count how often and how long the LLM stood aside, in all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class CoreShare:
    """Synthesis holds the cores (``synthesizing()``); the LLM yields to it between tokens."""

    def __init__(self, *, max_wait_s: float = 1.0, poll_s: float = 0.01) -> None:
        """``max_wait_s``: the longest one token waits; ``poll_s``: how often a waiting LLM
        looks at its stop event."""
        self.max_wait_s = max_wait_s
        self.poll_s = poll_s
        self._busy = 0
        self._idle = threading.Condition()
        self.waits = 0
        """Tokens that waited for synthesis."""
        self.waited_s = 0.0
        """Seconds the LLM spent waiting, in all."""

    @property
    def busy(self) -> bool:
        """A chunk is being synthesized."""
        return self._busy > 0

    @contextmanager
    def synthesizing(self) -> Iterator[None]:
        """Hold the cores for the block (nested or concurrent holds count)."""
        with self._idle:
            self._busy += 1
        try:
            yield
        finally:
            with self._idle:
                self._busy -= 1
                if not self._busy:
                    self._idle.notify_all()

    def wait_turn(self, stop: threading.Event | None = None) -> float:
        """Block while synthesis holds the cores (at most ``max_wait_s``, and not past ``stop``);
        return the seconds waited."""
        if not self._busy:
            return 0.0
        start = time.monotonic()
        deadline = start + self.max_wait_s
        with self._idle:
            while self._busy and not (stop is not None and stop.is_set()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._idle.wait(min(left, self.poll_s))
        waited = time.monotonic() - start
        self.waits += 1
        self.waited_s += waited
        return waited
