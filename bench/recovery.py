"""How fast does beaconlite notice what went wrong?

    python bench/recovery.py [--trials 5] [--runs 1000000]

1. restart after `kill -9` mid-run -> the orphan flipped to timeout (seconds from the
   new process's start);
2. SIGCONT after an 8 s SIGSTOP freeze -> the catch-up run of an every-1s job;
3. the reaper's time on a 1,000,000-run history with 100 live (orphaned) rows.
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_latency import build  # noqa: E402

from beaconlite import reaper, store  # noqa: E402

CONFIG = """
[daemon]
database = "b.db"
log_level = "warning"
heartbeat_interval = "1s"
[[jobs]]
name = "long"
command = ["sleep", "60"]
[[jobs]]
name = "tick"
schedule = "every 1s"
enabled = {tick}
run = "beaconlite.builtin:noop"
"""


def poll(predicate, timeout=30.0, interval=0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError


def query(db: Path, fn):
    try:
        if not store.open_reader(db):
            return None
        return fn()
    except Exception:
        return None
    finally:
        store.close()


def daemon_running(pid: int) -> bool:
    daemon, state = store.daemon_state(time.time())
    return daemon is not None and state == "running" and daemon.pid == pid


def started_since(job: str, since: float) -> list:
    return [r for r, _, _ in store.list_runs(job=job, limit=5) if r.started_at and r.started_at >= since]


def start(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "beaconlite", "-c", str(cfg), "daemon"], stderr=subprocess.DEVNULL
    )


def restart_to_flipped(tmp: Path, trials: int) -> list[float]:
    cfg, db = tmp / "r.toml", tmp / "b.db"
    cfg.write_text(CONFIG.format(tick="false"))
    times = []
    for _ in range(trials):
        proc = start(cfg)
        poll(lambda pid=proc.pid: query(db, lambda: daemon_running(pid)))
        subprocess.run(
            [sys.executable, "-m", "beaconlite", "-c", str(cfg), "trigger", "long"],
            check=True,
            capture_output=True,
        )
        run_id = poll(lambda: query(db, lambda: [r.id for r in store.live_runs()]))[0]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t0 = time.monotonic()
        proc = start(cfg)
        poll(lambda run_id=run_id: query(db, lambda: store.run_status(run_id) == "timeout"))
        times.append(time.monotonic() - t0)
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    return times


def freeze_to_catchup(tmp: Path, trials: int, freeze: float = 8.0) -> list[float]:
    cfg, db = tmp / "f.toml", tmp / "b.db"
    cfg.write_text(CONFIG.format(tick="true"))
    proc = start(cfg)
    poll(lambda: query(db, lambda: store.list_runs(job="tick", limit=1)))
    times = []
    for _ in range(trials):
        proc.send_signal(signal.SIGSTOP)
        time.sleep(freeze)
        frozen_until = time.time()
        proc.send_signal(signal.SIGCONT)
        t0 = time.monotonic()
        poll(lambda since=frozen_until: query(db, lambda: started_since("tick", since)))
        times.append(time.monotonic() - t0)
        time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    return times


def reaper_time(tmp: Path, runs: int) -> tuple[float, float]:
    db = tmp / "big.db"
    build(db, runs)
    store.open_writer(db)
    dead = store.register_instance("daemon", 999_999, socket.gethostname(), "b", 60, 0.0)
    now = time.time()
    for i in range(100):
        store.start_run(f"live-{i}", "schedule", now + i, 1, now + 3600, dead, now)
    t0 = time.perf_counter()
    orphans = reaper.find_orphans(now, socket.gethostname(), daemon_lock_free=True)
    find = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    reaped = reaper.reap(orphans, now)
    flip = (time.perf_counter() - t0) * 1000
    assert len(reaped) == 100
    t0 = time.perf_counter()
    reaper.find_orphans(now, socket.gethostname(), daemon_lock_free=True)
    idle = (time.perf_counter() - t0) * 1000
    store.close()
    return find + flip, idle


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1_000_000)
    args = parser.parse_args()
    import logging

    logging.getLogger("beaconlite").addHandler(logging.NullHandler())
    logging.getLogger("beaconlite").propagate = False
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        r = restart_to_flipped(tmp, args.trials)
        print(
            f"restart -> orphan flipped: median {statistics.median(r):.2f} s, "
            f"worst {max(r):.2f} s ({args.trials} trials; includes interpreter start)"
        )
        (tmp / "freeze").mkdir()
        f = freeze_to_catchup(tmp / "freeze", max(2, args.trials // 2))
        print(
            f"SIGCONT after 8 s freeze -> catch-up run: median {statistics.median(f):.2f} s, "
            f"worst {max(f):.2f} s"
        )
        both, idle = reaper_time(tmp, args.runs)
        print(
            f"reaper on {args.runs:,} runs: find + flip 100 orphans {both:.1f} ms; "
            f"scan with nothing to reap {idle:.2f} ms"
        )
    print(
        "usual approach (a cleanup job every 10-60 min, 30 min threshold): "
        "an orphan is flipped 30-90 min after its process died"
    )


if __name__ == "__main__":
    main()
