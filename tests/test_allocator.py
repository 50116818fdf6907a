"""The allocator settings for a long-running daemon."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from assistant.service import allocator


def test_tune_sets_glibc_s_thresholds_unless_the_environment_does(monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(__import__("ctypes").CDLL(None), "mallopt"):
        pytest.skip("not glibc")
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    monkeypatch.setenv("ASSISTANT_ALLOCATOR", "glibc")
    assert allocator.tune() == []
    monkeypatch.delenv("ASSISTANT_ALLOCATOR", raising=False)
    assert allocator.tune() == ["MALLOC_ARENA_MAX"]  # the mmap threshold is given here
    monkeypatch.setenv("ASSISTANT_ALLOCATOR", "lean")
    assert allocator.tune() == ["MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX"]
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.delenv("ASSISTANT_ALLOCATOR")
    assert allocator.tune() == ["MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX"]
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert allocator.tune() == ["MALLOC_MMAP_THRESHOLD_"]


def test_a_large_block_freed_is_given_back() -> None:
    """100 blocks freed under one still in use: glibc's defaults keep them (on a heap that cannot
    shrink past its top); the default tuning gives back those of 1 MB and more, ``lean`` those of
    128 KB and more (they were mapped)."""
    script = (
        "import ctypes, sys\n"
        "from assistant.service import allocator\n"
        "import os\n"
        "os.environ['ASSISTANT_ALLOCATOR'] = sys.argv[1]; allocator.tune()\n"
        "kb = int(sys.argv[2])\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.malloc.restype = ctypes.c_void_p\n"
        "libc.free.argtypes = [ctypes.c_void_p]\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1])\n"
        "blocks = []\n"
        "for size in range(1, 40):\n"  # growing sizes push glibc's dynamic threshold up
        "    p = libc.malloc(size << 20); ctypes.memset(p, 1, size << 20); libc.free(p)\n"
        "for _ in range(100):\n"
        "    p = libc.malloc(kb << 10); ctypes.memset(p, 1, kb << 10); blocks.append(p)\n"
        "before = rss()\n"
        "for p in blocks[:-1]: libc.free(p)\n"  # the last one stays: the heap cannot shrink from its top
        "print((before - rss()) * 4096 >> 20)\n"
    )

    def freed(mode: str, kb: int) -> int:
        run = subprocess.run([sys.executable, "-c", script, mode, str(kb)], capture_output=True, text=True)
        return int(run.stdout)

    assert freed("glibc", 6144) < 50 and freed("glibc", 3072) < 50  # heap blocks stay
    assert freed("default", 3072) >= 250 and freed("default", 1536) >= 100 and freed("default", 700) < 10
    assert freed("lean", 300) >= 25


def test_the_default_caps_the_heaps_at_two() -> None:
    """Six threads allocating at once share two heaps by default (glibc's own limit would give
    each its own heap on two or more cores); ``glibc`` leaves that limit alone."""
    if not hasattr(__import__("ctypes").CDLL(None), "malloc_info"):
        pytest.skip("not glibc")
    script = (
        "import ctypes, os, sys, tempfile, threading\n"
        "from assistant.service import allocator\n"
        "os.environ['ASSISTANT_ALLOCATOR'] = sys.argv[1]; allocator.tune()\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.malloc.restype = ctypes.c_void_p\n"
        "libc.fopen.restype = ctypes.c_void_p\n"
        "libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]\n"
        "libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]\n"
        "libc.fclose.argtypes = [ctypes.c_void_p]\n"
        "barrier = threading.Barrier(6)\n"
        "def work():\n"
        "    barrier.wait(); p = libc.malloc(64 << 10); ctypes.memset(p, 1, 64 << 10); barrier.wait()\n"
        "threads = [threading.Thread(target=work) for _ in range(6)]\n"
        "for t in threads: t.start()\n"
        "for t in threads: t.join()\n"
        "path = os.path.join(tempfile.mkdtemp(), 'info.xml')\n"
        "f = libc.fopen(path.encode(), b'w'); libc.malloc_info(0, f); libc.fclose(f)\n"
        "print(open(path).read().count('<heap nr='))\n"
    )

    def heaps(mode: str) -> int:
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
        run = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, env=env)
        return int(run.stdout)

    assert heaps("default") <= 2
    if (os.cpu_count() or 1) >= 2:
        assert heaps("glibc") >= 3  # glibc's own limit is 8 per core


async def test_the_heaps_are_trimmed_once_per_idle_spell(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from assistant.events import State, StateChanged, TurnEvent

    trims: list[float] = []
    monkeypatch.setattr(allocator, "trim", lambda: trims.append(0.0) or True)
    states: asyncio.Queue[object] = asyncio.Queue()
    task = asyncio.create_task(allocator.trim_when_idle(states, idle_s=0.05))  # type: ignore[arg-type]
    states.put_nowait(StateChanged(State.THINKING))
    await asyncio.sleep(0.15)
    assert trims == []  # busy: never
    states.put_nowait(StateChanged(State.IDLE))
    await asyncio.sleep(0.02)
    states.put_nowait(StateChanged(State.LISTENING))  # busy again before the idle time: not yet
    await asyncio.sleep(0.15)
    assert trims == []
    states.put_nowait(StateChanged(State.IDLE))
    states.put_nowait(TurnEvent(1, None))  # other events neither trim nor end the idle spell
    await asyncio.sleep(0.3)
    assert len(trims) == 1  # once per spell, however long it lasts
    task.cancel()


def test_trim_gives_freed_heap_pages_back() -> None:
    """Small blocks freed under one still in use stay on the heap; ``trim`` returns their pages."""
    if not hasattr(__import__("ctypes").CDLL(None), "malloc_trim"):
        pytest.skip("not glibc")
    script = (
        "import ctypes\n"
        "from assistant.service import allocator\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.malloc.restype = ctypes.c_void_p\n"
        "libc.free.argtypes = [ctypes.c_void_p]\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1])\n"
        "blocks = [libc.malloc(64 << 10) for _ in range(3000)]\n"  # 190 MB of 64 KB blocks
        "for p in blocks: ctypes.memset(p, 1, 64 << 10)\n"
        "for p in blocks[:-1]: libc.free(p)\n"
        "before = rss()\n"
        "allocator.trim()\n"
        "print((before - rss()) * 4096 >> 20)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert int(out.stdout) > 150, out.stdout
