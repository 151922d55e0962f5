"""A cluster on one PostgreSQL under load, and a node lost in the middle of it.

    python bench/cluster.py [--seconds 120] [--jobs 50]

Starts a throwaway PostgreSQL server (initdb, as the `postgres` user when run as root), then:
1. one node, JOBS jobs every second, for SECONDS: fire lag (started_at - scheduled_at, both
   the database's time) p50/p95;
2. three nodes on a fresh database, the same jobs, for SECONDS; one node `kill -9`ed at a
   random moment of the middle half. Prints duplicate executions (from a file every run
   appends to when it starts, whatever the database says), slots without a row, rows left
   running after the stop, the dead node's rescue time (kill -> its running rows flipped),
   and the fire lag.
Each job works 0.3 s; the kill waits (a few ms) for the moment a node has runs in flight.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import postgres  # noqa: E402  (tests/postgres.py: the throwaway server)

ORPHAN_AFTER = 5.0


def config(url: str, jobs: int, effects: Path) -> str:
    body = "".join(
        f'[[jobs]]\nname = "j{i}"\nschedule = "every 1s"\nrun = "jobs:effect"\n'
        f'params = {{file = "{effects}", work = 0.3}}\n'
        for i in range(jobs)
    )
    return (
        f'[daemon]\ndatabase = "{url}"\npython_path = ["{ROOT / "tests"}"]\nheartbeat_interval = "1s"\n'
        f'orphan_after = "{ORPHAN_AFTER:g}s"\nmax_concurrent_runs = 200\nlog_format = "json"\n{body}'
    )


def start_node(path: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "beaconlite", "-c", str(path), "daemon"],
        stdout=open(log, "a"),  # noqa: SIM115 - the child keeps it
        stderr=subprocess.STDOUT,
    )


def wait_started(log: Path, timeout: float = 20) -> None:
    until = time.monotonic() + timeout
    while '"daemon.start"' not in (log.read_text() if log.exists() else ""):
        if time.monotonic() > until:
            raise SystemExit(f"a node did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else float("nan")


LAGS = (
    "SELECT started_at - scheduled_at FROM run WHERE trigger = 'schedule' AND started_at > 0 "
    "AND scheduled_at >= %s"
)
BUSIEST = (
    "SELECT i.id, i.pid, count(r.id) FROM instance i LEFT JOIN run r ON r.instance_id = i.id "
    "AND r.status = 'running' WHERE i.stopped_at IS NULL GROUP BY i.id, i.pid ORDER BY 3 DESC, 1 LIMIT 1"
)
LIVE_OF = "SELECT count(*) FROM run WHERE status = 'running' AND instance_id = %s"


def lags(server, url: str, since: float) -> list[float]:
    return [lag * 1000 for (lag,) in server.sql(url, LAGS, (since,))]


def phase(server, nodes: int, seconds: float, jobs: int, workdir: Path, kill: bool) -> dict:
    url = server.new_database()
    effects = workdir / f"effects-{nodes}"
    path = workdir / f"beaconlite-{nodes}.toml"
    path.write_text(config(url, jobs, effects))
    logs = [workdir / f"node-{nodes}-{i}.log" for i in range(nodes)]
    procs = [start_node(path, log) for log in logs]
    for log in logs:
        wait_started(log)
    began = server.sql(url, "SELECT extract(epoch from clock_timestamp())::float8")[0][0] + 1
    end_at = time.monotonic() + seconds
    result: dict = {}
    if kill:
        time.sleep(random.uniform(seconds / 4, 3 * seconds / 4))
        # The node with the most runs in flight at that moment.
        instance, pid, live = server.sql(url, BUSIEST)[0]
        while not live:  # mid-run: wait for the next second's runs
            time.sleep(0.01)
            instance, pid, live = server.sql(url, BUSIEST)[0]
        victim = next(p for p in procs if p.pid == pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed = time.monotonic()
        while server.sql(url, LIVE_OF, (instance,))[0][0]:
            time.sleep(0.02)
        result["rescue_s"] = time.monotonic() - killed
        result["in_flight_at_kill"] = live
    time.sleep(max(0.0, end_at - time.monotonic()))
    ended = server.sql(url, "SELECT extract(epoch from clock_timestamp())::float8")[0][0] - 1
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(60)
    executed = Counter(tuple(line.split()[:2]) for line in effects.read_text().splitlines())
    result["executions"] = sum(executed.values())
    by_node = Counter(line.split()[2] for line in effects.read_text().splitlines())
    result["share"] = " / ".join(str(n) for n in sorted(by_node.values(), reverse=True))
    result["duplicates"] = sum(n - 1 for n in executed.values() if n > 1)
    rows = server.sql(url, "SELECT job, scheduled_at, slots, last_slot_at FROM run WHERE trigger != 'manual'")
    covered = set()
    for job, slot, slots, last in rows:
        covered |= {(job, s) for s in range(round(slot), round(last if slots > 1 else slot) + 1)}
    due = [(f"j{i}", s) for i in range(jobs) for s in range(int(began) + 1, int(ended))]
    result["slots"] = len(due)
    result["lost"] = sum(1 for slot in due if slot not in covered)
    result["skipped"] = server.sql(url, "SELECT count(*) FROM run WHERE status = 'skipped'")[0][0]
    result["left_running"] = server.sql(url, "SELECT count(*) FROM run WHERE status = 'running'")[0][0]
    values = lags(server, url, began)
    result["lag_p50_ms"], result["lag_p95_ms"] = percentile(values, 50), percentile(values, 95)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()
    reason = postgres.why_unavailable()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    server = postgres.Server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            os.chmod(workdir, 0o755)
            one = phase(server, 1, args.seconds, args.jobs, workdir, kill=False)
            three = phase(server, 3, args.seconds, args.jobs, workdir, kill=True)
    finally:
        server.stop()
    print(f"{args.jobs} jobs every 1 s, {args.seconds:g} s per phase, orphan_after {ORPHAN_AFTER:g} s")
    for name, figures in (("1 node", one), ("3 nodes", three)):
        print(
            f"{name}: fire lag p50 {figures['lag_p50_ms']:.1f} ms, p95 {figures['lag_p95_ms']:.1f} ms; "
            f"{figures['executions']} executions, duplicates {figures['duplicates']}, "
            f"lost slots {figures['lost']} of {figures['slots']}, left running {figures['left_running']}; "
            f"executions per node {figures['share']}; skipped rows {figures['skipped']}"
        )
    print(
        f"kill -9 of a node with {three['in_flight_at_kill']} run(s) in flight: "
        f"its runs flipped after {three['rescue_s']:.2f} s (orphan_after {ORPHAN_AFTER:g} s)"
    )


if __name__ == "__main__":
    main()
