"""Push-to-talk from the terminal: a key opens the microphone for one utterance.

When ``assistant run`` has a terminal on stdin and ``listen.mode = "push"`` (or
``--push-to-talk``), ``KeyReader`` puts the terminal in cbreak mode (each key arrives at once,
unechoed; Ctrl-C still stops the daemon), reads keys with ``loop.add_reader`` (the loop never
blocks on the terminal), and restores the terminal's settings however it ends: cancelled (the
daemon stops), an error in a key's action, or the terminal closing.

Keys (``KEYS``): Space or Enter: ``talk``; Esc or q: ``cancel``. Escape sequences (arrow and
function keys) are recognised and ignored, so they are not read as Esc. ``pipeline_actions``
maps the actions onto a pipeline: ``talk`` opens the microphone for one turn
(``Pipeline.listen``), ``cancel`` stops whatever is in flight and closes the microphone again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from assistant.pipeline import Pipeline

ESC = 0x1B
KEYS: dict[bytes, str] = {b" ": "talk", b"\r": "talk", b"\n": "talk", b"\x1b": "cancel", b"q": "cancel"}
"""What each key does."""
HINT = "push-to-talk: Space or Enter to talk, Esc or q to cancel, Ctrl-C to quit"


def decode(data: bytes) -> list[str]:
    """The actions of the bytes read from the terminal at once, in order."""
    actions: list[str] = []
    i = 0
    while i < len(data):
        if data[i] == ESC and data[i + 1 : i + 2] in (b"[", b"O"):  # CSI/SS3: skip to the final byte
            i += 2
            while i < len(data) and not 0x40 <= data[i] <= 0x7E:
                i += 1
            i += 1
            continue
        action = KEYS.get(data[i : i + 1].lower())
        if action is not None:
            actions.append(action)
        i += 1
    return actions


class KeyReader:
    """Reads keys from the terminal on ``fd`` and calls ``on_action`` for each action."""

    def __init__(self, fd: int, on_action: Callable[[str], None]) -> None:
        self.fd = fd
        self.on_action = on_action
        self.keys = 0
        """Actions taken."""

    async def run(self) -> None:
        """Read until cancelled or the terminal closes; an action's error is raised here. The
        terminal's settings are restored in every case."""
        loop = asyncio.get_running_loop()
        saved = termios.tcgetattr(self.fd)
        ended: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            try:
                data = os.read(self.fd, 256)
            except OSError:  # EIO: the terminal hung up
                data = b""
            if not data:
                loop.remove_reader(self.fd)
                if not ended.done():
                    ended.set_result(None)
                return
            try:
                for action in decode(data):
                    self.keys += 1
                    self.on_action(action)
            except Exception as err:  # noqa: BLE001 - raised from run(), not lost in the loop
                loop.remove_reader(self.fd)
                if not ended.done():
                    ended.set_exception(err)

        tty.setcbreak(self.fd, termios.TCSANOW)
        try:
            loop.add_reader(self.fd, readable)
            await ended
        finally:
            loop.remove_reader(self.fd)
            with contextlib.suppress(termios.error):  # the terminal is already gone
                termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)


def pipeline_actions(pipeline: Pipeline) -> Callable[[str], None]:
    """``talk``: open the microphone for one turn; ``cancel``: stop the turns in flight and, in
    push-to-talk mode, close the microphone again."""

    def act(action: str) -> None:
        if action == "talk":
            pipeline.listen()
        elif action == "cancel":
            pipeline.cancel()
            if pipeline.config.listen.mode == "push" and not pipeline.muted:
                pipeline.set_muted(True)

    return act
