"""OpenMP's idle threads made to sleep rather than spin (``OMP_WAIT_POLICY=PASSIVE``), after a
short spin (``GOMP_SPINCOUNT=1000``).

llama.cpp (libgomp) and CTranslate2 run their matrix work on OpenMP teams whose threads, by
default, spin for a while at every barrier and after every parallel region, waiting for work. On a
2-core device that also runs the voice, Whisper, the turn model or anything else, a spinning
thread holds a core that its peer needs, and a token can take ten times its time. ``passive_waits``
sets the policy before either library is loaded (the libraries read it once, when they load),
unless the environment already gives one (``OMP_WAIT_POLICY=ACTIVE`` brings the spinning back).

Measured on the project's 2-core machine with other work running (SmolLM2-135M, two threads, 8
questions per run, runs alternated, ``scripts/omp-wait``): per token p50 24-29 ms, worst 29-34 ms
passive, against 12-98 ms p50 and 80-273 ms worst by default; the first token's worst 250-555 ms
against 540-2,850.
On the quiet machine, in ``assistant bench`` (61 items, the same hour, runs back to back): e2e
paired median -1 ms (no change), the LLM's first token -27 ms, the first audio after it +11 ms.

Passive alone makes a thread sleep at *every* barrier, and a token of the default model crosses
hundreds of them: a sleeping peer is woken through the kernel each time, and two threads decoded
barely faster than one (51-59 against 43-54 tokens/s alone, quiet machine). A waiting thread now
first spins ``GOMP_SPINCOUNT`` times (libgomp's unit: a few microseconds at 1,000), long enough
to meet its peer at a barrier inside a token, too short to hold a core between tokens or while
Whisper or the voice runs: 90-92 tokens/s on two threads, 48-56 on one (``llm.n_threads``; two
threads 79-98 in 11 later runs, one 48-61).
"""

from __future__ import annotations

import os

POLICY = "OMP_WAIT_POLICY"
SPIN = "GOMP_SPINCOUNT"
SHORT_SPIN = "1000"
"""Spins before a waiting OpenMP thread sleeps (libgomp reads it whatever the policy)."""


def passive_waits() -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` with a short spin (``GOMP_SPINCOUNT``, unless the
    environment sets it) unless the environment sets a policy; returns the policy in force.
    Call before llama.cpp or CTranslate2 is imported."""
    if POLICY not in os.environ:  # a policy the user gives keeps libgomp's own spin for it
        os.environ.setdefault(SPIN, SHORT_SPIN)
    return os.environ.setdefault(POLICY, "PASSIVE")
