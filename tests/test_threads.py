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
    assert threads.passive_waits() == "PASSIVE" and os.environ[threads.POLICY] == "PASSIVE"
    monkeypatch.setenv(threads.POLICY, "ACTIVE")
    assert threads.passive_waits() == "ACTIVE" and os.environ[threads.POLICY] == "ACTIVE"


def test_the_cli_sets_it_before_any_openmp_library_is_loaded() -> None:
    code = (
        "import os, sys\n"
        "from assistant import cli\n"
        "maps = open('/proc/self/maps').read()\n"
        "assert 'gomp' not in maps and 'iomp' not in maps, 'an OpenMP library loaded on import'\n"
        "cli.main(['pipelines'])\n"
        "print(os.environ.get('OMP_WAIT_POLICY'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != threads.POLICY} | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "PASSIVE"
