"""The turn model's worker: asked at a pause, answering on the event loop.

``TurnJudge.ask(turn_id, pcm, on_verdict)`` runs ``TurnDetector.complete_probability`` in one
thread of its own and calls ``on_verdict(turn_id, probability)`` on the event loop that asked.
The thread may run ``TURN_MODEL_NICENESS`` steps below the rest of the process (Linux niceness is
per thread). A newer question cancels an older one not yet started; a model that raises is
logged, and no verdict comes (the segmenter then ends a finished statement at ``end_silence_ms``
rather than at the quick end). Without a running event loop (audio fed by hand) nothing is asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from assistant.contracts import TurnDetector

_LOGGER = logging.getLogger(__name__)

TURN_MODEL_NICENESS = 0
"""How much lower the turn model's thread runs than the rest of the process. At 5 (so that ASR's
speculation had the cores first) the verdict came after the quick end on most of the bench's
pauses: the speculated answer's LLM and voice take both cores once ASR is done, and a finished
statement now waits for the verdict (``Segmenter.verdict_due``)."""


class TurnJudge:
    """One turn model and the thread it runs in."""

    def __init__(self, model: TurnDetector) -> None:
        self.model = model
        self._worker: ThreadPoolExecutor | None = None
        self._asked: Future[float] | None = None

    def ask(self, turn_id: int, pcm: bytes, on_verdict: Callable[[int, float], None]) -> bool:
        """Judge ``pcm`` (the utterance so far) for ``turn_id``; False when there is no running
        loop to answer on."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if self._asked is not None:
            self._asked.cancel()  # an earlier pause's question, not started yet: moot
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, "turn-model", initializer=lower_priority)
        asked = self._worker.submit(self.model.complete_probability, pcm)
        self._asked = asked

        def answered(done: Future[float]) -> None:
            if done.cancelled():
                return
            error = done.exception()
            if error is not None:
                _LOGGER.warning("turn %d: the turn model failed (%s); the transcript decides", turn_id, error)
                return
            on_verdict(turn_id, done.result())

        def back_on_loop(done: Future[float]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits for it
                loop.call_soon_threadsafe(answered, done)

        asked.add_done_callback(back_on_loop)
        return True

    def close(self) -> None:
        """Stop the thread (a question under way finishes alone; its verdict is dropped)."""
        if self._asked is not None:
            self._asked.cancel()
        if self._worker is not None:
            self._worker.shutdown(wait=False, cancel_futures=True)
            self._worker = None


def lower_priority() -> None:
    """Lower the calling thread's CPU priority where the platform allows it (Linux)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + TURN_MODEL_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not permitted: the usual priority
        pass
