"""Median wall time of the query commands on a 1,000,000-run database.

    python bench/cli_latency.py [--runs 1000000] [--repeat 15]

Builds the database with beaconlite's own schema (20 jobs, mixed statuses, 3 steps per run
for the newest 10,000), then times whole processes: `beaconlite status --json`,
`runs --limit 20 --json`, `runs --job X --limit 20`, beside a bare `python -c "import sqlite3"`.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from beaconlite import store

STATUSES = ["success"] * 90 + ["warning"] * 4 + ["error"] * 3 + ["timeout", "skipped", "cancelled"]


def build(path: Path, runs: int, jobs: int = 20) -> None:
    store.open_writer(path)
    store.close()
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    start = time.time() - runs * 5.0
    rng = random.Random(1)
    batch = []
    for i in range(runs):
        job = f"job-{i % jobs:02d}"
        status = rng.choice(STATUSES)
        t = start + i * 5.0
        started = None if status == "skipped" else t + 0.01
        batch.append(
            (
                job,
                status,
                "schedule",
                1,
                t,
                started,
                t + 1.0,
                t + 60,
                None if started is None else 0.99,
                None if status == "success" else "x",
            )
        )
        if len(batch) == 50_000:
            conn.executemany(
                "INSERT INTO run (job, status, trigger, attempt, scheduled_at, started_at, "
                "finished_at, deadline_at, duration_s, error) VALUES (?,?,?,?,?,?,?,?,?,?)",
                batch,
            )
            batch = []
    if batch:
        conn.executemany(
            "INSERT INTO run (job, status, trigger, attempt, scheduled_at, started_at, "
            "finished_at, deadline_at, duration_s, error) VALUES (?,?,?,?,?,?,?,?,?,?)",
            batch,
        )
    conn.execute(
        "INSERT INTO step (run_id, name, status, started_at, finished_at) "
        "SELECT id, 'step-' || n.n, 'success', started_at, finished_at FROM run, "
        "(SELECT 1 AS n UNION SELECT 2 UNION SELECT 3) n WHERE id > ?",
        (runs - 10_000,),
    )
    conn.executemany(
        "INSERT INTO job (name, schedule, enabled, next_run_at) VALUES (?,?,?,?)",
        [(f"job-{j:02d}", "every 1m", 1, time.time() + 60) for j in range(jobs)],
    )
    conn.commit()  # no ANALYZE: beaconlite never runs one, so the planner works without stats
    conn.close()


def median_ms(cmd: list[str], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="beaconlite-bench-"))
    try:
        db = tmp / "beaconlite.db"
        t0 = time.time()
        build(db, args.runs)
        print(f"built {args.runs:,} runs in {time.time() - t0:.1f}s ({db.stat().st_size / 1e6:.0f} MB)")
        bl = [sys.executable, "-m", "beaconlite", "--database", str(db)]
        cases = {
            'python -c "import sqlite3"': [sys.executable, "-c", "import sqlite3"],
            "beaconlite status --json": bl + ["status", "--json"],
            "beaconlite runs --limit 20 --json": bl + ["runs", "--limit", "20", "--json"],
            "beaconlite runs --job job-07 --limit 20": bl + ["runs", "--job", "job-07", "--limit", "20"],
        }
        print(f"{'command':45} {'median ms':>10} {'max ms':>8}")
        for name, cmd in cases.items():
            med, worst = median_ms(cmd, args.repeat)
            print(f"{name:45} {med:10.1f} {worst:8.1f}")
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
