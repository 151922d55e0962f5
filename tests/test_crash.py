"""Crash matrix (a few trials here; bench/crash_matrix.py runs many)."""

from __future__ import annotations

import random

from conftest import subprocess_env
from crash_trials import CrashMatrix


def test_kill9_at_random_moments(tmp_path):
    matrix = CrashMatrix(tmp_path, subprocess_env())
    rng = random.Random(7)
    try:
        results = [matrix.trial(rng) for _ in range(4)]
    finally:
        matrix.stop()
    assert sum(r.runs_checked for r in results) > 0
    # no running row of a dead instance survives 1 s after a restart
    assert max(r.recovery_s for r in results) < 1.0, [r.recovery_s for r in results]
