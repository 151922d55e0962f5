"""kill -9 the daemon at random moments, restart it, and check the record (tests and bench)."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CONFIG = """
[daemon]
database = "state/b.db"
log_level = "warning"
heartbeat_interval = "0.2s"
reaper_interval = "0.5s"
abort_grace = "0.5s"
max_concurrent_runs = 50
[[jobs]]
name = "noop"
schedule = "every 1s"
run = "beaconlite.builtin:noop"
[[jobs]]
name = "steps"
schedule = "every 1s"
run = "jobs:steps"
params = {results = ["ok", "warn", "fail", "ok"]}
min_success_rate = 0.5
[[jobs]]
name = "command"
schedule = "every 1s"
command = ["sleep", "0.7"]
[[jobs]]
name = "slow"
schedule = "every 1s"
overlap = "skip"
command = ["sleep", "2.5"]
"""


@dataclass
class TrialResult:
    runs_checked: int
    recovery_s: float


class CrashMatrix:
    def __init__(self, directory: Path, env: dict):
        self.dir = directory
        self.config = directory / "beaconlite.toml"
        self.config.write_text(CONFIG)
        self.db = directory / "state" / "b.db"
        self.env = env
        self.proc: subprocess.Popen | None = None

    def _query(self, sql: str, args=()) -> list:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def start(self) -> float:
        """Start the daemon; seconds until no running row of a dead instance is left."""
        before = self._latest_instance() if self.db.exists() else 0
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "beaconlite", "-c", str(self.config), "daemon"],
            stderr=subprocess.DEVNULL,
            env=self.env,
        )
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}")
            try:
                new = self._latest_instance() if self.db.exists() else 0
                if new > before:
                    stale = self._query(
                        "SELECT COUNT(*) FROM run WHERE status = 'running' "
                        "AND (instance_id IS NULL OR instance_id != ?)",
                        (new,),
                    )
                    if stale[0][0] == 0:
                        return time.monotonic() - t0
            except sqlite3.OperationalError:
                pass  # being created
            if time.monotonic() - t0 > 15:
                raise AssertionError("orphans not flipped within 15 s of a restart")
            time.sleep(0.005)

    def _latest_instance(self) -> int:
        rows = self._query("SELECT MAX(id) FROM instance WHERE kind = 'daemon'")
        return rows[0][0] or 0

    def kill9(self) -> dict[int, str]:
        """SIGKILL the daemon; the finished runs at that moment."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return dict(self._query("SELECT id, status FROM run WHERE status != 'running'"))

    def check(self, finished: dict[int, str]) -> int:
        """Nothing finished disappeared or changed; the database is intact."""
        now = dict(self._query("SELECT id, status FROM run"))
        changed = {i: (s, now.get(i)) for i, s in finished.items() if now.get(i) != s}
        assert not changed, f"finished runs changed or vanished: {list(changed.items())[:5]}"
        assert self._query("PRAGMA integrity_check") == [("ok",)]
        return len(finished)

    def trial(self, rng: random.Random) -> TrialResult:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        # early kills land mid-recovery (the reap at start), later ones mid-run / mid-write
        time.sleep(rng.choice([rng.uniform(0.0, 0.3), rng.uniform(0.3, 3.0)]))
        finished = self.kill9()
        recovery = self.start()
        return TrialResult(self.check(finished), recovery)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
