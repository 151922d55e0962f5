"""The daemon under load and at rest, beside bare APScheduler 3 with the same jobs.

    python bench/daemon.py [--seconds 30] [--idle-seconds 30]

1. 20 noop jobs firing every second: runs recorded, fire lag (started_at - scheduled_at)
   p50/p95/p99; then the noop run's bookkeeping time (row written -> finish recorded) p50,
   one run at a time.
2. 50 hourly jobs, idle: RSS and CPU (% of one core) of the whole process.
Bare APScheduler imports peewee, requests and click too, so the comparison is fair.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from beaconlite import loader, store

BARE = textwrap.dedent("""
    import sys, time, statistics
    import peewee, requests, click  # noqa: F401  (as heavy as the daemon)
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger
    from apscheduler.events import EVENT_JOB_SUBMITTED
    mode, jobs, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    lags = []
    sched = BackgroundScheduler()
    def noop():
        pass
    def on_submit(event):
        lags.append(time.time() - event.scheduled_run_times[0].timestamp())
    sched.add_listener(on_submit, EVENT_JOB_SUBMITTED)
    start = int(time.time()) + 1
    from datetime import datetime, timezone
    for i in range(jobs):
        trigger = (IntervalTrigger(seconds=1, start_date=datetime.fromtimestamp(start, timezone.utc))
                   if mode == "load" else CronTrigger(minute=0))
        sched.add_job(noop, trigger, id=str(i), misfire_grace_time=None, coalesce=False)
    sched.start()
    print("ready", flush=True)
    time.sleep(seconds)
    if lags:
        lags.sort()
        q = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))] * 1000
        print(f"{len(lags)} {q(0.5):.2f} {q(0.95):.2f} {q(0.99):.2f}", flush=True)
""")


def cpu_seconds(pid: int) -> float:
    if Path(f"/proc/{pid}/stat").exists():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    out = subprocess.run(
        ["ps", "-o", "cputime=", "-p", str(pid)], capture_output=True, text=True
    ).stdout.strip()
    parts = [float(p) for p in out.replace("-", ":").split(":")]
    return sum(v * 60**i for i, v in enumerate(reversed(parts)))


def rss_mib(pid: int) -> float:
    if Path(f"/proc/{pid}/status").exists():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True)
    return int(out.stdout.strip()) / 1024


def idle_figures(proc: subprocess.Popen, warmup: float, seconds: float) -> tuple[float, float]:
    time.sleep(warmup)
    cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(seconds)
    cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
    return rss_mib(proc.pid), cpu


def config(tmp: Path, jobs: int, schedule: str) -> Path:
    text = '[daemon]\ndatabase = "b.db"\nlog_level = "warning"\nmax_concurrent_runs = 100\n'
    for i in range(jobs):
        text += f'[[jobs]]\nname = "job-{i:02d}"\nschedule = "{schedule}"\nrun = "beaconlite.builtin:noop"\n'
    path = tmp / f"{jobs}.toml"
    path.write_text(text)
    return path


def start_daemon(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "beaconlite", "-c", str(path), "daemon"], stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 15
    while not store.open_reader(path.parent / "b.db") or not store.latest_daemon():
        assert time.monotonic() < deadline and proc.poll() is None, "daemon did not start"
        time.sleep(0.1)
    store.close()
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def noop_bookkeeping(tmp: Path, runs: int = 200) -> float:
    """The runner's own cost for a run that does nothing, in this process."""
    from beaconlite import clock
    from beaconlite.config import load_config
    from beaconlite.runner import Runner

    cfg = load_config(config(tmp, 1, "@hourly"))
    store.open_writer(tmp / "noop.db")
    instance = store.register_instance("daemon", os.getpid(), "bench", "b", 60, clock.wall())
    runner = Runner(cfg, loader.load(cfg), instance)
    durations = []
    for i in range(runs):
        live = runner.start(cfg.jobs[0], "manual", float(i))
        live.ended.wait(10)
        run = store.get_run(live.run_id)[0]
        durations.append((run.finished_at - run.started_at) * 1000)
    store.close()
    return statistics.median(durations)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--idle-seconds", type=float, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"load: 20 noop jobs every 1 s for {args.seconds:.0f} s")
        proc = start_daemon(config(tmp, 20, "every 1s"))
        t_start = time.time()
        time.sleep(args.seconds)
        stop(proc)
        store.open_reader(tmp / "b.db")
        runs = [r for r in store.Run.select() if r.scheduled_at >= t_start + 1 and r.started_at]
        lag = [(r.started_at - r.scheduled_at) * 1000 for r in runs]
        book = [(r.finished_at - r.started_at) * 1000 for r in runs if r.finished_at]
        store.close()
        bare = subprocess.run(
            [sys.executable, "-c", BARE, "load", "20", str(args.seconds)], capture_output=True, text=True
        ).stdout.split()
        print(f"  {'':28} {'beaconlite':>12} {'bare APScheduler':>18}")
        print(f"  {'runs recorded / submitted':28} {len(runs):12d} {bare[1]:>18}")
        for name, p, col in (
            ("fire lag p50 ms", 0.5, 2),
            ("fire lag p95 ms", 0.95, 3),
            ("fire lag p99 ms", 0.99, 4),
        ):
            print(f"  {name:28} {pct(lag, p):12.2f} {bare[col]:>18}")
        print(f"  {'noop duration p50 ms (burst)':28} {statistics.median(book):12.2f} {'-':>18}")
        print(
            f"noop run bookkeeping, one run at a time (row written -> finish recorded): "
            f"p50 {noop_bookkeeping(tmp):.2f} ms"
        )

        print(f"idle: 50 hourly jobs, measured over {args.idle_seconds:.0f} s after 5 s warm-up")
        idle_dir = tmp / "idle"
        idle_dir.mkdir()
        proc = start_daemon(config(idle_dir, 50, "@hourly"))
        rss, cpu = idle_figures(proc, 5, args.idle_seconds)
        stop(proc)
        bare_proc = subprocess.Popen(
            [sys.executable, "-c", BARE, "idle", "50", str(args.idle_seconds + 10)], stdout=subprocess.PIPE
        )
        bare_rss, bare_cpu = idle_figures(bare_proc, 5, args.idle_seconds)
        bare_proc.kill()
        print(f"  {'RSS MiB':28} {rss:12.1f} {bare_rss:18.1f}")
        print(f"  {'CPU % of a core':28} {cpu:12.2f} {bare_cpu:18.2f}")


if __name__ == "__main__":
    main()
