"""Cores shared between the LLM and speech synthesis: the LLM waits between tokens while a
chunk is synthesized, never longer than its bound, never past a cancel; numpy keeps to one."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from assistant.config import Config
from assistant.engines import load_engines
from assistant.engines.share import CoreShare


def hold_for(share: CoreShare, seconds: float) -> threading.Thread:
    """Synthesis holding the cores for ``seconds``, in another thread (started)."""
    held = threading.Event()

    def run() -> None:
        with share.synthesizing():
            held.set()
            time.sleep(seconds)

    thread = threading.Thread(target=run)
    thread.start()
    held.wait()
    return thread


def test_an_idle_share_never_waits() -> None:
    share = CoreShare()
    assert share.wait_turn() == 0.0 and share.waits == 0


def test_the_llm_waits_until_synthesis_ends() -> None:
    share = CoreShare(max_wait_s=5.0)
    thread = hold_for(share, 0.3)
    assert share.busy
    waited = share.wait_turn()
    thread.join()
    assert 0.25 < waited < 1.0 and not share.busy and share.waits == 1


def test_the_wait_is_bounded() -> None:
    share = CoreShare(max_wait_s=0.1)
    thread = hold_for(share, 0.6)
    waited = share.wait_turn()
    assert 0.09 < waited < 0.3 and share.busy
    thread.join()


def test_a_cancelled_turn_stops_waiting_at_once() -> None:
    share = CoreShare(max_wait_s=5.0)
    thread = hold_for(share, 1.0)
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    waited = share.wait_turn(stop)
    assert waited < 0.3
    thread.join()


def test_nested_holds_release_only_at_the_outermost() -> None:
    share = CoreShare()
    with share.synthesizing():
        with share.synthesizing():
            assert share.busy
        assert share.busy
    assert not share.busy


@pytest.mark.models
def test_llama_generation_stands_aside_while_piper_synthesizes(engines: Any) -> None:
    """The real engines, loaded as the daemon loads them, share one ``CoreShare``."""
    llm, tts = engines.llm, engines.tts
    assert llm.share is tts.share
    stamps: list[float] = []
    spoken: list[bytes] = []
    ended: list[float] = []

    def speak() -> None:
        tts.synthesize("One moment, please. " * 4, spoken.append)
        ended.append(time.monotonic())

    synth = threading.Thread(target=speak)

    def on_token(_piece: str) -> None:
        stamps.append(time.monotonic())
        if len(stamps) == 1:  # a chunk starts synthesizing just after the first token
            synth.start()
            while not tts.share.busy and not ended:
                time.sleep(0.001)

    llm.chat([{"role": "user", "content": "Name three colours."}], on_token)
    synth.join()
    assert spoken and len(stamps) > 2
    # generation waited until the synthesis was over (or for the longest wait allowed)
    assert stamps[1] >= min(ended[0], stamps[0] + llm.share.max_wait_s) - 0.02
    assert llm.yielded_s > 0.05


def test_loading_engines_keeps_numpy_blas_to_one_thread(tmp_path: Path) -> None:
    """OpenBLAS's worker spun for 40-50 ms after each of Whisper's feature computations, on the
    core the LLM's first evaluation needed."""
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    controller.limit(limits=2, user_api="blas")
    assert any(p.num_threads == 2 for p in controller.select(user_api="blas").lib_controllers)
    load_engines(Config(), tmp_path, asr=False, llm=False, tts=False)
    blas = ThreadpoolController().select(user_api="blas").lib_controllers
    assert blas and all(p.num_threads == 1 for p in blas)
