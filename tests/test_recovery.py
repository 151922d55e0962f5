"""Recovery: kill -9, freeze, elapsed-time jumps, and the health verdict."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from conftest import wait_for
from test_daemon import cli

from beaconlite import clock, store
from beaconlite.config import load_config
from beaconlite.daemon import Daemon
from beaconlite.slots import Fire


@pytest.fixture
def orphaned(daemon):
    """A daemon killed with SIGKILL in the middle of a run: (the daemon, the orphan)."""
    d = daemon("""
        [[jobs]]
        name = "long"
        command = ["sleep", "30"]
    """)
    assert cli("-c", d.config, "trigger", "long").returncode == 0
    wait_for(lambda: any(r.status == "running" for r in d.runs("long")), 5, what="the run")
    d.kill9()
    (run,) = d.runs("long")
    return d, run


def test_kill9_then_reap_cli_and_health(orphaned):
    d, run = orphaned
    out = cli("-c", d.config, "reap", "--dry-run", "--json")
    assert out.returncode == 0 and f'"id": {run.id}' in out.stdout
    assert d.runs("long")[0].status == "running"  # a dry run changes nothing
    out = cli("-c", d.config, "reap")
    assert out.returncode == 0 and "flipped 1" in out.stdout
    (run,) = d.runs("long")
    assert run.status == "timeout" and run.error.startswith(f"orphaned: daemon pid {d.proc.pid}")
    out = cli("-c", d.config, "health", "--json")
    assert out.returncode == 1  # the daemon is down
    assert json.loads(out.stdout)["metrics"]["orphans_reaped_24h"] == 1


def test_cancel_of_an_orphan(orphaned):
    d, run = orphaned
    out = cli("-c", d.config, "cancel", run.id)
    assert out.returncode == 0 and "cancelled" in out.stdout
    assert d.runs("long")[0].status == "cancelled"


def test_freeze_sigstop_no_burst(daemon):
    d = daemon("""
        [[jobs]]
        name = "tick"
        schedule = "every 1s"
        run = "beaconlite.builtin:noop"
    """)
    wait_for(lambda: len(d.runs("tick")) >= 2, 5, what="runs")
    d.signal(signal.SIGSTOP)
    time.sleep(4)
    frozen_at = time.time()
    before = {r.id for r in d.runs("tick")}
    d.signal(signal.SIGCONT)
    wait_for(lambda: "frozen for" in d.log(), 5, what="the freeze to be logged")
    time.sleep(2.5)
    new = [r for r in d.runs("tick") if r.id not in before]
    burst = [r for r in new if r.started_at and r.scheduled_at < frozen_at - 1]
    assert len(burst) <= 1, [(r.trigger, r.scheduled_at) for r in burst]  # one catch-up at most
    # the missed fires summed up in one row (a fire skipped for overlap is another matter)
    skipped = [r for r in new if r.status == "skipped" and r.error.startswith("missed")]
    assert len(skipped) == 1 and "frozen for" in skipped[0].error, [
        (r.scheduled_at, r.finished_at, r.error) for r in skipped
    ]
    gap = next(e for e in d.events() if e.get("event") == "daemon.gap")
    assert "frozen for 3." in gap["message"] or "frozen for 4." in gap["message"], gap["message"]
    assert all(r.status != "running" or r.started_at > time.time() - 2 for r in d.runs("tick"))


@pytest.fixture
def inprocess_daemon(make_config):
    """A Daemon running on a thread of this process, so a test can move its clocks."""
    started = []

    def start(body: str) -> Daemon:
        config = load_config(
            make_config(
                '[daemon]\ndatabase = "state/b.db"\nheartbeat_interval = "0.2s"\n'
                'abort_grace = "0.5s"\n' + body
            )
        )
        d = Daemon(config)
        thread = threading.Thread(target=d.run, kwargs={"handle_signals": False}, daemon=True)
        thread.start()
        wait_for(lambda: d.scheduler is not None and d.scheduler.running(), 10, what="the daemon")
        started.append((d, thread))
        return d

    yield start
    for d, thread in started:
        d.request_stop()
        thread.join(10)


def test_elapsed_time_jump_aborts_overdue_runs_and_catches_up_once(
    inprocess_daemon, http_server, monkeypatch
):
    d = inprocess_daemon(f"""
        [[jobs]]
        name = "ten"
        schedule = "every 10m"
        run = "beaconlite.builtin:noop"
        [[jobs]]
        name = "hanging"
        timeout = "1h"
        run = "jobs:fetch"
        params = {{url = "{http_server.url}/hang"}}
        [[jobs]]
        name = "sleeper"
        timeout = "1h"
        command = ["sleep", "600"]
    """)
    # the every-10-min job's last slot, as if it ran just now
    last_slot = (int(time.time()) // 600) * 600
    d.slots.start(Fire("ten", float(last_slot), "schedule"), time.time())
    hanging = d.slots.trigger(d.config.job("hanging"), time.time()).run_id
    sleeper = d.slots.trigger(d.config.job("sleeper"), time.time()).run_id
    wait_for(lambda: http_server.count("/hang") == 1, 5, what="the hanging request")
    pgid = wait_for(lambda: d.runner.get(sleeper)._process, 5, what="the command").pid
    assert {hanging, sleeper} <= {r.run_id for r in d.runner.live_runs()}
    ten_before = {r.id for r, _, _ in store.list_runs(job="ten")}

    # A suspend of 2 h: wall and elapsed time move on, the monotonic clock does not.
    jump = 7200.0
    real_wall, real_elapsed = clock.wall, clock.elapsed
    monkeypatch.setattr(clock, "wall", lambda: real_wall() + jump)
    monkeypatch.setattr(clock, "elapsed", lambda: real_elapsed() + jump)
    t0 = time.monotonic()
    wait_for(
        lambda: store.run_status(hanging) == "timeout" and store.run_status(sleeper) == "timeout",
        3,
        what="the overdue runs to be timed out",
    )
    assert time.monotonic() - t0 < 1.5  # within one tick (and the abort's own work)

    def group_gone():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(group_gone, 3, what="the command's process group to be killed")
    wait_for(
        lambda: len([r for r in store.list_runs(job="ten", limit=50)]) >= 3,
        5,
        what="the catch-up of the every-10-min job",
    )
    time.sleep(1.5)
    ten = [r for r, _, _ in store.list_runs(job="ten", limit=50)]
    catchups = [r for r in ten if r.status != "skipped" and r.id not in ten_before]
    skipped = [r for r in ten if r.status == "skipped"]
    assert len(catchups) == 1 and len(skipped) == 1, [(r.trigger, r.status) for r in ten]
    assert "suspended for 2h00m" in skipped[0].error
    assert int(skipped[0].error.split()[1]) == 11  # 12 slots in 2 h: the latest runs


# -- health -------------------------------------------------------------------------------
