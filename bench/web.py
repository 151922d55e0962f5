"""The web endpoint under load, and what it costs the scheduler.

    python bench/web.py [--runs 1000000] [--seconds 10] [--clients 8]

1. A daemon with 100 jobs over 1,000,000 runs in history: requests/s and p50/p99 latency of
   GET /api/status and GET / from a second process on 127.0.0.1 (CLIENTS threads, each
   request on a new connection, as the endpoint answers one per connection).
2. 20 jobs firing every second: the fire lag p95 (started_at - scheduled_at) with no web
   client and with 50 clients polling /api/status once a second each (independent pollers,
   each from its own phase), in three alternating windows of each.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_latency import build  # noqa: E402

TOKEN = "bench-token"

# The load, from a second process: per-request latencies in ms, one line per request.
# With a period, each client polls once per period from its own random phase (independent
# pollers, as monitors and open pages are); without, each asks again as soon as answered.
LOAD = textwrap.dedent("""
    import random, sys, threading, time, http.client
    port, path, clients = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    seconds, period = float(sys.argv[4]), float(sys.argv[5])
    lat, lock, stop = [], threading.Lock(), time.monotonic() + seconds
    def client():
        due = time.monotonic() + random.random() * period
        while True:
            time.sleep(max(0.0, due - time.monotonic()))
            if time.monotonic() >= stop:
                return
            t0 = time.perf_counter()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", path, headers={"Authorization": "Bearer bench-token"})
            r = c.getresponse(); r.read(); c.close()
            assert r.status == 200, r.status
            with lock:
                lat.append((time.perf_counter() - t0) * 1000)
            due = max(due + period, time.monotonic()) if period else time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    [t.start() for t in threads]; [t.join() for t in threads]
    lat.sort()
    print(len(lat), lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))])
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp: Path, jobs: int, schedule: str, port: int) -> Path:
    text = (f'[daemon]\ndatabase = "b.db"\nlog_level = "warning"\nmax_concurrent_runs = 100\n'
            f'[web]\nlisten = "127.0.0.1:{port}"\ntoken = "{TOKEN}"\n')  # fmt: skip
    for i in range(jobs):
        text += f'[[jobs]]\nname = "job-{i:02d}"\nschedule = "{schedule}"\nrun = "beaconlite.builtin:noop"\n'
    path = tmp / "b.toml"
    path.write_text(text)
    return path


def start(config: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "beaconlite", "-c", str(config), "daemon"], stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "the daemon did not start"
            time.sleep(0.1)


def load(port: int, path: str, clients: int, seconds: float, period: float = 0.0) -> tuple[int, float, float]:
    out = subprocess.run(
        [sys.executable, "-c", LOAD, str(port), path, str(clients), str(seconds), str(period)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    count, p50, p99 = out.stdout.split()
    return int(count), float(p50), float(p99)


def fire_lags(database: Path, windows: list[tuple[float, float]]) -> list[float]:
    """started_at - scheduled_at, in ms, of the runs whose slots lie in the windows."""
    import sqlite3

    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    lags = [
        (started - scheduled) * 1000
        for since, until in windows
        for started, scheduled in conn.execute(
            "SELECT started_at, scheduled_at FROM run WHERE started_at IS NOT NULL AND scheduled_at > ? "
            "AND scheduled_at <= ?",
            (since, until),
        )
    ]
    conn.close()
    return sorted(lags)


def p95(values: list[float]) -> float:
    return values[min(len(values) - 1, int(len(values) * 0.95))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        port = free_port()
        build(tmp / "b.db", args.runs, jobs=100)
        proc = start(write_config(tmp, 100, "@yearly", port), port)
        try:
            print(f"100 jobs, {args.runs:,} runs, {args.clients} clients for {args.seconds:.0f} s each:")
            for path in ("/api/status", "/"):
                count, p50, p99 = load(port, path, args.clients, args.seconds)
                rate = count / args.seconds
                print(f"  GET {path:12} {rate:7.0f} requests/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        finally:
            proc.terminate()
            proc.wait(30)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        port = free_port()
        proc = start(write_config(tmp, 20, "every 1s", port), port)
        quiet, busy = [], []  # alternating windows, so drift in the machine hits both alike
        try:
            time.sleep(2)
            for _ in range(3):
                began = time.time()
                time.sleep(args.seconds)
                quiet.append((began, time.time()))
                began = time.time()
                load(port, "/api/status", 50, args.seconds, period=1.0)
                busy.append((began, time.time()))
            quiet_lags, busy_lags = fire_lags(tmp / "b.db", quiet), fire_lags(tmp / "b.db", busy)
        finally:
            proc.terminate()
            proc.wait(30)
    print(
        f"fire lag p95, 20 jobs every 1 s: no web client {p95(quiet_lags):.1f} ms ({len(quiet_lags)} runs); "
        f"50 clients polling /api/status every second {p95(busy_lags):.1f} ms ({len(busy_lags)} runs); "
        f"difference {p95(busy_lags) - p95(quiet_lags):+.1f} ms (target <= 5 ms)"
    )


if __name__ == "__main__":
    main()
