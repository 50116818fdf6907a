"""OpenMP's wait policy is set before the engines load, unless the user set one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.service import threads

ROOT = Path(__file__).resolve().parents[1]


def test_passive_unless_the_environment_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(threads.POLICY, raising=False)
    monkeypatch.delenv(threads.SPIN, raising=False)
    assert threads.passive_waits() == "PASSIVE" and os.environ[threads.POLICY] == "PASSIVE"
    assert os.environ[threads.SPIN] == threads.SHORT_SPIN


def test_a_policy_or_spin_the_user_gives_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(threads.POLICY, "ACTIVE")
    monkeypatch.delenv(threads.SPIN, raising=False)
    assert threads.passive_waits() == "ACTIVE" and os.environ[threads.POLICY] == "ACTIVE"
    assert threads.SPIN not in os.environ  # libgomp's own spin for an active policy
    monkeypatch.delenv(threads.POLICY)
    monkeypatch.setenv(threads.SPIN, "0")
    assert threads.passive_waits() == "PASSIVE" and os.environ[threads.SPIN] == "0"


def test_the_cli_sets_it_before_any_openmp_library_is_loaded() -> None:
    code = (
        "import os, sys\n"
        "from assistant import cli\n"
        "maps = open('/proc/self/maps').read()\n"
        "assert 'gomp' not in maps and 'iomp' not in maps, 'an OpenMP library loaded on import'\n"
        "cli.main(['pipelines'])\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))\n"
    )
    unset = (threads.POLICY, threads.SPIN)
    env = {k: v for k, v in os.environ.items() if k not in unset} | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"PASSIVE {threads.SHORT_SPIN}"


@pytest.mark.parametrize(
    ("configured", "usable", "used"), [(0, 2, 2), (0, 1, 1), (0, 8, 4), (3, 8, 3), (1, 2, 1)]
)
def test_the_llm_generates_on_every_usable_core_up_to_four(
    configured: int, usable: int, used: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assistant.config import LlmConfig
    from assistant.engines.llama import generation_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(usable)), raising=False)
    assert generation_threads(LlmConfig(n_threads=configured)) == used


def test_the_engine_loads_with_those_threads(model_dir: Path, tmp_path: Path) -> None:
    """Real SmolLM2: llama-cpp-python's own default would be half the cores."""
    from dataclasses import replace

    from assistant import models
    from assistant.config import Config
    from assistant.engines.llama import LlamaEngine, generation_threads

    config = replace(Config().llm, warm=False, max_tokens=4)
    engine = LlamaEngine(models.resolve(config.model, "llm", model_dir), config, state_dir=tmp_path)
    assert engine._llm.n_threads == generation_threads(config) == min(len(os.sched_getaffinity(0)), 4)
    assert engine._llm.context_params.n_threads == engine._llm.n_threads
