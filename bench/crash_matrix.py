"""kill -9 the daemon at random moments (mid-write, mid-run, mid-reap), restart, check.

    python bench/crash_matrix.py [--trials 50] [--seed 1]

After every restart: no running row of a dead instance survives (time measured), no
finished run disappears or changes status, PRAGMA integrity_check is ok.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from crash_trials import CrashMatrix  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as tmp:
        matrix = CrashMatrix(Path(tmp), env)
        rng = random.Random(args.seed)
        results = []
        try:
            for _ in range(args.trials):
                results.append(matrix.trial(rng))
        finally:
            matrix.stop()
    recoveries = [r.recovery_s for r in results]
    print(
        f"trials: {len(results)}; finished runs checked (summed over trials): "
        f"{sum(r.runs_checked for r in results):,}; all unchanged, integrity_check ok"
    )
    print(
        f"recovery (restart -> no orphan left): median {statistics.median(recoveries):.3f} s, "
        f"worst {max(recoveries):.3f} s (includes interpreter start)"
    )


if __name__ == "__main__":
    main()
