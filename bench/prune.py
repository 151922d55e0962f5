"""Pruning a large history under a running daemon.

    python bench/prune.py [--runs 1000000]

Builds a history (runs every 5 s back to ~58 days ago for 1,000,000 rows), starts the
daemon on it with a job firing every second, and prunes everything older than one day with
`beaconlite prune` while a reader queries and a writer probes for the write lock.
Prints runs pruned per second, the longest time a writer waited, and any errors.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_latency import build  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        db = tmp / "b.db"
        build(db, args.runs)
        cfg = tmp / "c.toml"
        cfg.write_text(
            '[daemon]\ndatabase = "b.db"\nlog_level = "warning"\n'
            '[[jobs]]\nname = "tick"\nschedule = "every 1s"\n'
            'run = "beaconlite.builtin:noop"\n'
        )
        daemon = subprocess.Popen(
            [sys.executable, "-m", "beaconlite", "-c", str(cfg), "daemon"], stderr=subprocess.PIPE, text=True
        )
        time.sleep(2)
        stop = threading.Event()
        waits, errors, reads = [], [], [0]

        def writer():
            conn = sqlite3.connect(db, timeout=30, isolation_level=None)
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("COMMIT")
                except sqlite3.Error as e:
                    errors.append(f"writer: {e}")
                waits.append(time.perf_counter() - t0)
                time.sleep(0.005)

        def reader():
            conn = sqlite3.connect(db, timeout=30)
            while not stop.is_set():
                try:
                    conn.execute("SELECT * FROM run ORDER BY id DESC LIMIT 20").fetchall()
                    reads[0] += 1
                except sqlite3.Error as e:
                    errors.append(f"reader: {e}")

        threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "beaconlite", "-c", str(cfg), "prune", "--older-than", "1d", "--json"],
            capture_output=True,
            text=True,
        )
        took = time.perf_counter() - t0
        stop.set()
        for t in threads:
            t.join()
        daemon.send_signal(signal.SIGTERM)
        _, daemon_err = daemon.communicate(timeout=30)
        pruned = json.loads(out.stdout)["pruned"] if out.returncode == 0 else 0
        print(f"pruned {pruned:,} runs in {took:.1f} s: {pruned / took:,.0f} runs/s")
        print(
            f"longest write-lock wait seen by another writer: {max(waits) * 1000:.1f} ms "
            f"(p50 {sorted(waits)[len(waits) // 2] * 1000:.2f} ms, {len(waits)} probes)"
        )
        print(
            f"reader queries during the prune: {reads[0]:,}; errors: {len(errors)}"
            + (f" (first: {errors[0]})" if errors else "")
        )
        locked = daemon_err.count("database is locked")
        print(f"daemon log lines with 'database is locked': {locked}; prune exit {out.returncode}")


if __name__ == "__main__":
    main()
