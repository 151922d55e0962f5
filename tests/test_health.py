"""The health verdict and its metrics, read from a real database (SPEC section 6)."""

from __future__ import annotations

import os
import socket
import time

import pytest

from beaconlite import store


def health(cli_, db):
    result = cli_("--database", db, "health", "--json")
    return result.code, result.json()


@pytest.fixture
def fresh_daemon(tmp_db):
    """A daemon instance with a fresh heartbeat, holding the lock as a live daemon does."""
    from beaconlite.lock import DaemonLock

    lock = DaemonLock(tmp_db)
    assert lock.try_acquire()
    now = time.time()
    instance = store.register_instance("daemon", os.getpid(), socket.gethostname(), "v", 60, now - 30)
    store.heartbeat(instance, [], now)
    yield instance
    lock.release()


def test_health_healthy_with_every_metric(cli, tmp_db, fresh_daemon):
    store.close()
    code, value = health(cli, tmp_db)
    assert code == 0 and value["healthy"] is True and value["problems"] == []
    assert set(value["metrics"]) == {
        "daemon_heartbeat_age_s",
        "live_runs",
        "long_running_runs",
        "leaked_threads",
        "overdue_jobs",
        "runs_24h",
        "failed_24h",
        "timeouts_24h",
        "orphans_reaped_24h",
    }
    prom = cli("--database", tmp_db, "health", "--prometheus")
    assert prom.code == 0 and "beaconlite_healthy 1" in prom.out
    assert "beaconlite_daemon_heartbeat_age_seconds" in prom.out


def test_health_daemon_down_and_stale(cli, tmp_db, fresh_daemon):
    store.heartbeat(fresh_daemon, [], time.time() - 61)
    code, value = health(cli, tmp_db)
    assert code == 1 and "heartbeat" in value["problems"][0]
    assert cli("--database", tmp_db, "status", "--json").json()["daemon"]["state"] == "stale"
    store.open_writer(tmp_db)
    store.stop_instance(fresh_daemon, time.time())
    code, value = health(cli, tmp_db)
    assert code == 1 and value["problems"] == ["the daemon is not running"]
    prom = cli("--database", tmp_db, "health", "--prometheus")
    assert prom.code == 0 and "beaconlite_healthy 0" in prom.out


def test_health_leaked_thread_and_run_past_deadline(cli, tmp_db, fresh_daemon):
    store.set_leaked_threads(fresh_daemon, 1)
    now = time.time()
    store.start_run("j", "schedule", now - 100, 1, now - 50, fresh_daemon, now - 100)
    code, value = health(cli, tmp_db)
    assert code == 1
    assert any("leaked" in p for p in value["problems"])
    assert any("past their deadline" in p for p in value["problems"])
    assert value["metrics"]["long_running_runs"] == 1 and value["metrics"]["leaked_threads"] == 1


def test_health_overdue_job(cli, tmp_db, fresh_daemon):
    store.save_job_states(
        [
            {"name": "tick", "schedule": "every 5s", "enabled": 1, "next_run_at": None},
            {"name": "hourly", "schedule": "@hourly", "enabled": 1, "next_run_at": None},
        ]
    )
    code, value = health(cli, tmp_db)
    assert code == 1 and value["problems"] == ["overdue: tick"]
    assert value["metrics"]["overdue_jobs"] == 1


def test_health_unreadable_database(cli, tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"x" * 4096)
    code, value = health(cli, bad)
    assert code == 1 and value["problems"][0].startswith("database unreadable")
