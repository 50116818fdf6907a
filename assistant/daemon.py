"""The daemon: the one TaskGroup that every long-lived task of the assistant runs in.

    Daemon.run(source)
      TaskGroup
      ├── source, vad, asr, llm, chunker, tts, output   the pipeline's chain (Pipeline.voice_chain)
      ├── budget                                         acknowledgements (Pipeline.helpers)
      └── services: mqtt, watchdog, keys ...             given by the caller, each by name

The chain ends when its source does (``EndOfStream`` runs down it); the helpers and services are
then cancelled, each given ``STOP_TIMEOUT_S`` to finish, and a task that will not die is named in
the log. A stage never ends the group for a turn's failure (each has its error boundary,
``stages.base.run_inbox``); a task that raises is a bug in the wiring, which ends the daemon
(systemd or runit restarts it). See ``docs/architecture.md``, "Who owns which task".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from assistant.audio.sources import AudioSource
from assistant.pipeline import Pipeline, Task

_LOGGER = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0
"""How long a cancelled helper or service may take to finish."""

Service = tuple[str, Callable[[], Coroutine[Any, Any, None]]]
"""A named long-lived service, started when the daemon runs (the MQTT bridge, the watchdog...)."""


class Daemon:
    """Runs a pipeline and the services beside it in one TaskGroup."""

    def __init__(self, pipeline: Pipeline, services: Iterable[Service] = ()) -> None:
        self.pipeline = pipeline
        self.services = list(services)
        self.tasks: list[asyncio.Task[None]] = []
        """Every task of the current run, named (empty when not running)."""

    async def run(self, source: AudioSource) -> None:
        """Listen to ``source`` until it ends and every reply has been written."""
        await self._run(self.pipeline.voice_chain(source))

    async def run_text(self, text: str) -> None:
        """Answer typed ``text`` as one turn, then end."""
        await self._run(self.pipeline.text_chain(text))

    async def _run(self, chain: list[Task]) -> None:
        try:
            await self.pipeline.prepare()  # once the chain is built: the stages are known
        except BaseException:
            for _, coro in chain:
                coro.close()
            raise
        beside = [(name, start()) for name, start in self.services] + self.pipeline.helpers()
        try:
            async with asyncio.TaskGroup() as group:
                helpers = [group.create_task(coro, name=name) for name, coro in beside]
                stages = [group.create_task(coro, name=name) for name, coro in chain]
                self.tasks = helpers + stages
                await asyncio.gather(*stages)
                await self._stop(helpers)
        finally:
            self.tasks = []

    @staticmethod
    async def _stop(tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
        for task in pending:
            _LOGGER.error(
                "task %s did not stop within %.0f s of being cancelled", task.get_name(), STOP_TIMEOUT_S
            )
