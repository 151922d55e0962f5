from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from beaconlite import reaper, store

HOST = socket.gethostname()


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def live_run(instance: int, job: str = "j", started: float = 100.0) -> int:
    return store.start_run(job, "schedule", started, 1, started + 60, instance, started)


def test_orphan_rules(tmp_db, dead_pid):
    now = 1000.0
    old_daemon = store.register_instance("daemon", 11, HOST, "v", 120, 10.0)
    fresh_daemon = store.register_instance("daemon", 12, HOST, "v", 120, now - 5)
    stale_daemon = store.register_instance("daemon", 13, HOST, "v", 120, now - 500)
    fg_gone = store.register_instance("foreground", dead_pid, HOST, "v", 120, now - 1)
    fg_alive = store.register_instance("foreground", os.getpid(), HOST, "v", 120, now - 1)
    fg_elsewhere = store.register_instance("foreground", 1, "other-host", "v", 120, now - 1)
    fg_stale = store.register_instance("foreground", os.getpid(), HOST, "v", 120, now - 300)
    runs = {
        name: live_run(i, name, started=100.0 + k)
        for k, (name, i) in enumerate(
            [
                ("old", old_daemon),
                ("fresh", fresh_daemon),
                ("stale", stale_daemon),
                ("fg_gone", fg_gone),
                ("fg_alive", fg_alive),
                ("fg_elsewhere", fg_elsewhere),
                ("fg_stale", fg_stale),
            ]
        )
    }
    store.stop_instance(old_daemon, 20.0)

    with_daemon = {o.job: o.reason for o in reaper.find_orphans(now, HOST, daemon_lock_free=False)}
    assert set(with_daemon) == {"old", "stale", "fg_gone", "fg_stale"}
    assert with_daemon["old"] == f"orphaned: daemon pid 11 on {HOST} stopped"
    assert "stopped heartbeating" in with_daemon["stale"]
    assert with_daemon["fg_gone"] == f"orphaned: foreground run pid {dead_pid} on {HOST} is gone"

    no_daemon = {o.job for o in reaper.find_orphans(now, HOST, daemon_lock_free=True)}
    assert no_daemon == {"old", "fresh", "stale", "fg_gone", "fg_stale"}

    # A daemon's own runs are judged by their deadline only: one a thread still serves is
    # never an orphan; one past its deadline (+ grace) that nothing serves is.
    serving = reaper.Own(fresh_daemon, frozenset({runs["fresh"]}), 10.0)
    assert "fresh" not in {o.job for o in reaper.find_orphans(now, HOST, daemon_lock_free=True, own=serving)}
    abandoned = reaper.Own(fresh_daemon, frozenset(), 10.0)
    reasons = {o.job: o.reason for o in reaper.find_orphans(now, HOST, daemon_lock_free=True, own=abandoned)}
    assert reasons["fresh"] == "past its deadline and no longer running"

    young = {o.job for o in reaper.find_orphans(now, HOST, daemon_lock_free=True, older_than=now - 102.5)}
    assert young == {"old", "fresh", "stale"}  # started at 100, 101, 102

    orphans = reaper.find_orphans(now, HOST, daemon_lock_free=False)
    reaped = reaper.reap(orphans, now, batch_size=2)
    assert {o.id for o in reaped} == {runs[j] for j in ("old", "stale", "fg_gone", "fg_stale")}
    assert store.run_status(runs["old"]) == "timeout"
    assert store.run_status(runs["fg_alive"]) == "running"
    assert reaper.reap(orphans, now) == []  # a second reaper loses every race


def test_reap_cli_dry_run_and_json(tmp_db, cli, dead_pid):
    fg = store.register_instance("foreground", dead_pid, HOST, "v", 120, 1.0)
    run_id = live_run(fg)
    store.close()
    result = cli("--database", tmp_db, "reap", "--dry-run", "--json")
    assert result.code == 0
    value = result.json()
    assert value["dry_run"] is True and [r["id"] for r in value["reaped"]] == [run_id]
    assert set(value["reaped"][0]) == {"id", "job", "started_at", "reason"}
    store.open_reader(tmp_db)
    assert store.run_status(run_id) == "running"
    result = cli("--database", tmp_db, "reap", "--json")
    assert [r["id"] for r in result.json()["reaped"]] == [run_id]
    store.open_reader(tmp_db)
    assert store.run_status(run_id) == "timeout"
    assert cli("--database", tmp_db, "reap", "--json").json()["reaped"] == []
