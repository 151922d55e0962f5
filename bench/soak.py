"""Soak: 50 jobs for 10 minutes, a mix of fast, slow, failing, hanging and leaking runs.

    python bench/soak.py [--minutes 10] [--jobs 50]

Prints RSS and threads after warm-up and at the end, leaked threads, runs by status, and
whether every run ended terminal after the daemon's clean stop.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from peers import start_peer, stop_peer  # noqa: E402

KINDS = [
    ("fast", 'run = "beaconlite.builtin:noop"', "every 1s"),
    ("steps", 'run = "jobs:steps"\nparams = {{results = ["ok", "warn", "ok"]}}', "every 2s"),
    ("slow", 'command = ["sleep", "3"]\ntimeout = "10s"', "every 5s"),
    ("failing", 'command = ["sh", "-c", "echo oops; exit 1"]', "every 2s"),
    ("hanging", 'run = "jobs:fetch"\ntimeout = "2s"\nparams = {{url = "{url}/hang"}}', "every 5s"),
    (
        "leaking",
        'run = "jobs:sleep_uncooperatively"\ntimeout = "1s"\nparams = {{seconds = 120}}',
        "every 30s",
    ),
]


def proc_status(pid: int) -> tuple[float, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return int(fields["VmRSS"][0]) / 1024, int(fields["Threads"][0])


def leaked(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=10)
    try:
        row = conn.execute(
            "SELECT leaked_threads FROM instance WHERE kind = 'daemon' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return row[0] if row else 0
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=60)
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        sys.exit("soak reads /proc: run it on Linux")
    peer = start_peer()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        text = (
            '[daemon]\ndatabase = "b.db"\nlog_level = "warning"\nabort_grace = "1s"\n'
            'max_concurrent_runs = 200\nheartbeat_interval = "1s"\n'
        )
        for i in range(args.jobs):
            name, body, schedule = KINDS[i % len(KINDS)]
            text += (
                f'[[jobs]]\nname = "{name}-{i:02d}"\nschedule = "{schedule}"\n'
                + body.format(url=peer.url)
                + "\n"
            )
        (tmp / "c.toml").write_text(text)
        env = dict(os.environ, PYTHONPATH=str(TESTS))
        daemon = subprocess.Popen(
            [sys.executable, "-m", "beaconlite", "-c", str(tmp / "c.toml"), "daemon"],
            stderr=subprocess.DEVNULL,
            env=env,
        )
        time.sleep(args.warmup)
        rss0, threads0 = proc_status(daemon.pid)
        leaked0 = leaked(tmp / "b.db")
        time.sleep(max(0.0, args.minutes * 60 - args.warmup))
        rss1, threads1 = proc_status(daemon.pid)
        leaked1 = leaked(tmp / "b.db")
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(60)
        conn = sqlite3.connect(tmp / "b.db")
        by_status = collections.Counter(s for (s,) in conn.execute("SELECT status FROM run"))
        conn.close()
    stop_peer(peer)
    print(f"{args.jobs} jobs for {args.minutes:g} min (warm-up {args.warmup:.0f} s); daemon exit {code}")
    print(
        f"RSS: {rss0:.1f} MiB after warm-up, {rss1:.1f} MiB at the end ({(rss1 - rss0) / rss0 * 100:+.1f} %)"
    )
    print(
        f"threads: {threads0} after warm-up, {threads1} at the end; leaked run threads "
        f"alive: {leaked0} -> {leaked1} (threads grew {threads1 - threads0}, "
        f"leaks grew {leaked1 - leaked0})"
    )
    print("runs: " + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())))
    print(f"every run terminal after the stop: {by_status.get('running', 0) == 0}")


if __name__ == "__main__":
    main()
