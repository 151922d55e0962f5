"""What a database outage costs: every run's end and every slot, after a lock or a full disk.

    python bench/faults.py [--outage 10] [--jobs 3]

A real daemon runs JOBS jobs every second (a Python noop, a command, and a Python run that
works 1.5 s, so some runs are live when the outage starts and end during it). Then:

1. lock: another process holds `BEGIN EXCLUSIVE` on the database for OUTAGE seconds;
2. disk full: the database lives on a 4 MB tmpfs that is filled for OUTAGE seconds
   (needs root to mount; skipped otherwise).

Printed for each: runs ended during the outage / recorded / recorded with a wrong status;
slots due / accounted for exactly once (SPEC section 3); time from the release to the last
pending end recorded; the daemon's RSS before and after.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOBS = [
    'run = "beaconlite.builtin:noop"',
    'command = ["true"]',
    'run = "benchjobs:work"\nparams = {seconds = 1.5}',
]

# The Python run that works a while, checking its deadline as it goes.
WORK = """
import time

def work(ctx):
    until = time.monotonic() + ctx.params["seconds"]
    while time.monotonic() < until:
        time.sleep(0.02)
        ctx.checkpoint()
"""

HOLD_LOCK = (
    "import sqlite3, sys\n"
    "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
    "c.execute('BEGIN EXCLUSIVE')\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
)


def config(database: Path, jobs: int) -> str:
    text = f'[daemon]\ndatabase = "{database}"\nlog_format = "json"\nheartbeat_interval = "1s"\n'
    for i in range(jobs):
        text += (
            f'\n[[jobs]]\nname = "job-{i}"\nschedule = "every 1s"\ntimeout = "30s"\n{JOBS[i % len(JOBS)]}\n'
        )
    return text


def rows(database: Path, sql: str, args=()) -> list:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def poll(predicate, timeout: float = 30.0):
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        try:
            if predicate():
                return True
        except sqlite3.OperationalError:
            pass  # not created yet
        time.sleep(0.01)
    return False


def accounted(database: Path, job: str, first: float, last: float) -> tuple[int, int]:
    """(slots due in [first, last], slots with exactly one attempt-1 row) of an every-1s job."""
    found: dict[int, int] = {}
    for scheduled_at, slots in rows(
        database, "SELECT scheduled_at, slots FROM run WHERE job = ? AND attempt = 1", (job,)
    ):
        for i in range(slots or 1):
            slot = round(scheduled_at) + i
            found[slot] = found.get(slot, 0) + 1
    due = range(int(first), int(last) + 1)
    return len(due), sum(1 for s in due if found.get(s) == 1)


def scenario(name: str, directory: Path, jobs: int, outage: float, hold, release) -> None:
    database = directory / "b.db"
    cfg = directory / "beaconlite.toml"
    cfg.write_text(config(database, jobs))
    (directory / "benchjobs.py").write_text(WORK)
    log = open(directory / "daemon.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "beaconlite", "-c", str(cfg), "daemon"], stderr=log)
    try:
        poll(lambda: database.exists() and len(rows(database, "SELECT id FROM run")) >= 3 * jobs)
        time.sleep(2)
        rss_before = rss_mib(proc.pid)
        began = time.time()
        hold()
        time.sleep(outage)
        release()
        released, released_wall = time.monotonic(), time.time()
        # Every run that started before the outage has ended by now (the longest takes
        # 1.5 s): its end is recorded once the pending ends land.
        landed = poll(
            lambda: (
                not rows(database, "SELECT id FROM run WHERE status = 'running' AND started_at < ?", (began,))
            )
        )
        to_last_end = time.monotonic() - released if landed else float("inf")
        time.sleep(3)
        rss_after = rss_mib(proc.pid)
        # A run's finished_at is when it ended, not when its row was written.
        ended = rows(
            database,
            "SELECT status FROM run WHERE started_at < ? AND (finished_at >= ? OR status = 'running')",
            (began, began),
        )
        wrong = sum(1 for (status,) in ended if status != "success")
        due = ok = 0
        for i in range(jobs):
            first = rows(database, "SELECT MIN(scheduled_at) FROM run WHERE job = ?", (f"job-{i}",))[0][0]
            d, o = accounted(database, f"job-{i}", first, released_wall - 1)
            due, ok = due + d, ok + o
        recorded = sum(1 for (status,) in ended if status != "running")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        log.close()
    text = (directory / "daemon.log").read_text()
    print(f"{name} outage of {outage:.0f} s, {jobs} jobs every 1 s:")
    print(f"  runs ended during it / recorded / wrong status: {len(ended)} / {recorded} / {wrong}")
    print(f"  slots due / accounted for exactly once: {due} / {ok}")
    print(f"  release -> last pending end recorded: {to_last_end:.2f} s")
    print(f"  daemon RSS before / after: {rss_before:.1f} / {rss_after:.1f} MiB")
    starts, ends = text.count('"store.outage"'), text.count('"store.outage_end"')
    print(f"  outage log lines (start / end): {starts} / {ends}; stop exit code {code}")


def lock_outage(tmp: Path, jobs: int, outage: float) -> None:
    directory = tmp / "lock"
    directory.mkdir()
    holder: list[subprocess.Popen] = []

    def hold():
        p = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(directory / "b.db")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert p.stdout.readline().strip() == "locked"
        holder.append(p)

    def release():
        holder[0].stdin.close()
        holder[0].wait(10)

    scenario("lock", directory, jobs, outage, hold, release)


def disk_full_outage(tmp: Path, jobs: int, outage: float) -> None:
    directory = tmp / "disk"
    directory.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(directory)], capture_output=True
    )
    if done.returncode != 0:
        print(f"disk full: skipped (cannot mount a tmpfs: {done.stderr.decode().strip()})")
        return
    filler = directory / "filler"

    def fill():
        with open(filler, "ab", buffering=0) as f:  # nothing left to flush at close
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass

    try:
        scenario("disk full", directory, jobs, outage, fill, lambda: filler.unlink())
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--outage", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lock_outage(Path(tmp), args.jobs, args.outage)
        if sys.platform.startswith("linux") and os.geteuid() == 0:
            disk_full_outage(Path(tmp), args.jobs, args.outage)
        else:
            print("disk full: skipped (needs root on Linux to mount a tmpfs)")


if __name__ == "__main__":
    main()
