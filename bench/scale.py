"""How beaconlite's costs grow with the number of jobs and the length of the history.

    python bench/scale.py [--parts queries,burst,size,prune] [--quick]

queries  A real daemon over a built history (beaconlite's own schema; 10,000 runs a day,
         each job on its own `every` grid, so the last 24 hours always hold 10,000 runs and
         only the history's length changes). For each (jobs, runs): the daemon's start until
         READY, its idle CPU, and the median wall time of `status --json`, `health --json`
         and `runs --limit 20 --json` run as whole processes with the config.
burst    N jobs due at the same instant (`every 30s`, max_concurrent_runs = N), each a Python
         run that returns when its code began: fire lag (the row's started_at - the slot)
         and work lag (the job's first line - the slot) p50 / p95, peak threads and RSS,
         freezes the daemon logged, then a SIGTERM in the middle of the next burst: how
         long the stop took and how many rows stayed running.
size     bytes per run of the largest history, by table and index.
prune    bench/prune.py on 1,000,000 runs.

--quick stops at 1,000,000 runs and 1,000 jobs.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from daemon import cpu_seconds  # noqa: E402

from beaconlite import store  # noqa: E402

RATE = 10_000  # runs a day, whatever the number of jobs
STATUSES = ["success"] * 90 + ["warning"] * 4 + ["error"] * 3 + ["timeout", "skipped", "cancelled"]


def began(ctx):
    """The burst's job: when its own code began."""
    return {"began": time.time()}


# -- building a history -------------------------------------------------------------------


def period_of(jobs: int) -> float:
    return round(86400 * jobs / RATE, 3)


def build(path: Path, jobs: int, runs: int) -> None:
    """``runs`` rows over ``jobs`` jobs, each job on its grid, newest slot now, ids in time order."""
    store.open_writer(path)
    store.close()
    period, per_job = period_of(jobs), max(1, runs // jobs)
    last = (time.time() // period) * period
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    conn.execute("CREATE TEMP TABLE status_of (code INTEGER PRIMARY KEY, status TEXT)")
    conn.executemany("INSERT INTO status_of VALUES (?, ?)", enumerate(STATUSES))
    conn.execute(
        f"""
        INSERT INTO run (job, status, trigger, attempt, scheduled_at, started_at, finished_at,
                         deadline_at, duration_s, error, slots)
        WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < {per_job - 1}),
                       j(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM j WHERE n < {jobs - 1}),
                       r AS (SELECT i, n, {last} - ({per_job - 1} - i) * {period} AS slot,
                                    (SELECT status FROM status_of WHERE code = (i * 7919 + n * 104729) % 100)
                                    AS status FROM k CROSS JOIN j)
        SELECT printf('job-%05d', n), status, 'schedule', 1, slot,
               CASE WHEN status = 'skipped' THEN NULL ELSE slot + 0.01 END, slot + 1.0, slot + 1800,
               CASE WHEN status = 'skipped' THEN NULL ELSE 0.99 END,
               CASE WHEN status = 'success' THEN NULL ELSE status || ': see the run' END, 1
        FROM r
        """  # noqa: S608 - numbers of our own
    )
    conn.execute(
        "INSERT INTO step (run_id, name, status, started_at, finished_at) "
        "SELECT id, 'step-' || s.s, 'success', started_at, finished_at FROM run, "
        "(SELECT 1 AS s UNION SELECT 2 UNION SELECT 3) s WHERE id > (SELECT MAX(id) FROM run) - 10000"
    )
    conn.commit()  # no ANALYZE: beaconlite never runs one, so the planner works without stats
    conn.close()


def write_config(directory: Path, jobs: int, schedule: str, **daemon) -> Path:
    settings = {"database": "b.db", "log_format": "json", "log_level": "info", "python_path": [str(BENCH)]}
    settings.update(daemon)
    text = "[daemon]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    job = f'schedule = "{schedule}"\nrun = "scale:began"\n'
    text += "".join(f'[[jobs]]\nname = "job-{n:05d}"\n{job}' for n in range(jobs))
    path = directory / "b.toml"
    path.write_text(text)
    return path


# -- a daemon and its log -----------------------------------------------------------------


class Daemon:
    def __init__(self, config: Path):
        self.log_path = config.with_suffix(".log")
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.spawned = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "beaconlite", "-c", str(config), "daemon"], stderr=self.log
        )

    def events(self, name: str) -> list[dict]:
        found = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                found.append(json.loads(line))
        return found

    def wait_ready(self, limit: float = 120) -> float:
        """Seconds from spawn to READY (the start log line is written with READY=1)."""
        while not self.events("daemon.start"):
            assert self.proc.poll() is None, self.log_path.read_text()[-2000:]
            assert time.monotonic() - self.spawned < limit, "the daemon did not start"
            time.sleep(0.02)
        return time.monotonic() - self.spawned

    def stop(self) -> float:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        self.log.close()
        return time.monotonic() - t0


def median_ms(cmd: list[str], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


# -- the parts ----------------------------------------------------------------------------


def queries(points: list[tuple[int, int]], tmp: Path) -> None:
    print("queries: a live daemon over a history of 10,000 runs a day; medians of 5 whole processes")
    print(f"  {'jobs':>6} {'runs':>11} {'ready s':>8} {'idle CPU %':>10} "
          f"{'status ms':>10} {'health ms':>10} {'runs ms':>8}")  # fmt: skip
    for jobs, runs in points:
        directory = tmp / f"q-{jobs}-{runs}"
        directory.mkdir()
        t0 = time.monotonic()
        build(directory / "b.db", jobs, runs)
        built = time.monotonic() - t0
        config = write_config(directory, jobs, f"every {period_of(jobs)}s")
        daemon = Daemon(config)
        try:
            ready = daemon.wait_ready()
            time.sleep(3)
            cpu0, w0 = cpu_seconds(daemon.proc.pid), time.monotonic()
            time.sleep(10)
            idle = (cpu_seconds(daemon.proc.pid) - cpu0) / (time.monotonic() - w0) * 100
            cli = [sys.executable, "-m", "beaconlite", "-c", str(config)]
            status = median_ms(cli + ["status", "--json"])
            health = median_ms(cli + ["health", "--json"])
            listing = median_ms(cli + ["runs", "--limit", "20", "--json"])
        finally:
            daemon.stop()
        print(f"  {jobs:6,} {runs:11,} {ready:8.2f} {idle:10.2f} {status:10.0f} {health:10.0f} {listing:8.0f}"
              f"   (built in {built:.0f} s)", flush=True)  # fmt: skip


class Sampler(threading.Thread):
    """Peak threads of a process, sampled every 20 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopped = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("Threads:"):
                        self.peak = max(self.peak, int(line.split()[1]))
            except OSError:
                return
            time.sleep(0.02)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def burst(sizes: list[int], tmp: Path) -> None:
    print("burst: N jobs due at the same instant (every 30s, max_concurrent_runs = N)")
    print(f"  {'jobs':>6} {'fire p50/p95 ms':>16} {'work p50/p95 ms':>16} {'ended':>8} {'threads':>8} "
          f"{'RSS MiB':>8} {'freezes':>8} {'stop s':>7} {'left running':>12}")  # fmt: skip
    for size in sizes:
        directory = tmp / f"burst-{size}"
        directory.mkdir()
        config = write_config(directory, size, "every 30s", max_concurrent_runs=size, abort_grace="2s")
        daemon = Daemon(config)
        sampler = Sampler(daemon.proc.pid)
        try:
            daemon.wait_ready()
            sampler.start()
            slot = (time.time() // 30 + 1) * 30
            if slot - time.time() < 3:
                slot += 30
            time.sleep(max(0.0, slot - time.time()))
            store.open_reader(directory / "b.db")
            deadline = time.time() + 28
            while time.time() < deadline:
                done = store.Run.select().where(store.Run.scheduled_at == slot, store.Run.status != "running")
                if done.count() >= size:
                    break
                time.sleep(0.2)
            rows = list(store.Run.select().where(store.Run.scheduled_at == slot))
            store.close()
            fire = [(r.started_at - r.scheduled_at) * 1000 for r in rows if r.started_at]
            work = [(json.loads(r.summary)["began"] - r.scheduled_at) * 1000 for r in rows if r.summary]
            ended = sum(1 for r in rows if r.status != "running")
            freezes = len(daemon.events("daemon.gap"))
            rss = peak_rss_mib(daemon.proc.pid)
            time.sleep(max(0.0, slot + 30.2 - time.time()))  # the next burst is under way
        finally:
            sampler.stopped.set()
            took = daemon.stop()
        store.open_reader(directory / "b.db")
        left = store.Run.select().where(store.Run.status == "running").count()
        store.close()
        lags = f"{pct(fire, 0.5):7.0f} /{pct(fire, 0.95):7.0f} {pct(work, 0.5):7.0f} /{pct(work, 0.95):7.0f}"
        print(f"  {size:6,} {lags} {ended:8,} {sampler.peak:8,} {rss:8.0f} {freezes:8} {took:7.1f} {left:12}",
              flush=True)  # fmt: skip


def size(jobs: int, runs: int, tmp: Path) -> None:
    path = tmp / "size.db"
    build(path, jobs, runs)
    conn = sqlite3.connect(path)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    print(f"size: {jobs:,} jobs, {runs:,} runs: {path.stat().st_size / runs:.0f} bytes per run")
    try:
        parts = conn.execute(
            "SELECT name, SUM(pgsize) FROM dbstat WHERE name LIKE 'run%' OR name = 'sqlite_autoindex_run_1' "
            "GROUP BY name ORDER BY 2 DESC"
        ).fetchall()
        for name, used in parts:
            print(f"  {name:40} {used / runs:6.1f} bytes per run")
    except sqlite3.OperationalError:
        print(f"  (no dbstat in this SQLite; page size {page})")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", default="queries,burst,size,prune")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    parts = args.parts.split(",")
    big = 1_000_000 if args.quick else 10_000_000
    most = 1_000 if args.quick else 10_000
    with tempfile.TemporaryDirectory(prefix="beaconlite-scale-") as tmp:
        tmp = Path(tmp)
        if "queries" in parts:
            points = [
                (10, 10_000),
                (10, 1_000_000),
                (10, big),
                (1_000, 1_000_000),
                (most, 1_000_000),
                (most, big),
            ]
            queries(list(dict.fromkeys(points)), tmp)
        if "burst" in parts:
            burst(sorted({100, 1_000, most}), tmp)
        if "size" in parts:
            size(most, big, tmp)
    if "prune" in parts:
        subprocess.run([sys.executable, str(BENCH / "prune.py"), "--runs", "1000000"], check=True)


if __name__ == "__main__":
    main()
