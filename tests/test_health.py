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


def test_the_readme_alert_rules_fire_when_they_should(tmp_path):
    """The README's three Prometheus rules, checked by promtool against the metric names
    beaconlite serves: no success in twice the interval, unhealthy, leaked threads."""
    import json
    import re
    import shutil
    import subprocess
    from pathlib import Path

    from beaconlite import health as health_module

    if not shutil.which("promtool"):
        pytest.skip("no promtool on this machine (apt-get install prometheus)")
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    rules = re.search(r"```yaml\n(groups:.*?)```", readme, re.S)[1]
    (tmp_path / "rules.yml").write_text(rules)
    served = health_module.prometheus(health_module.Health([], {"leaked_threads": 0}), [])
    assert "beaconlite_healthy" in served and "beaconlite_leaked_threads" in served
    assert "beaconlite_job_last_success_timestamp_seconds" in health_module.prometheus(
        health_module.Health([], {}),
        [{"name": "j", "last_success_at": 1.0, "last_finished_at": 1.0, "last_status": "success",
          "live_runs": 0, "paused": False}],
    )  # fmt: skip

    def alert(name, labels, values):
        summary = re.search(rf"alert: {name}\b.*?summary: \"(.*?)\"", rules, re.S)[1]
        return {"exp_labels": labels, "exp_annotations": {"summary": summary.replace("{{ $value }}", values)}}

    cases = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [  # a last success at 0 and none since; unhealthy, then 2 leaks
                    {
                        "series": 'beaconlite_job_last_success_timestamp_seconds{job="orders-integrity"}',
                        "values": "0+0x60",
                    },
                    {"series": "beaconlite_healthy", "values": "1 1 1 0+0x10"},
                    {"series": "beaconlite_leaked_threads", "values": "0 0 2+0x10"},
                ],  # fmt: skip
                "alert_rule_test": [
                    {"eval_time": "33m", "alertname": "BeaconliteNoRecentSuccess", "exp_alerts": []},
                    {
                        "eval_time": "40m",
                        "alertname": "BeaconliteNoRecentSuccess",
                        "exp_alerts": [alert("BeaconliteNoRecentSuccess", {"job": "orders-integrity"}, "")],
                    },
                    {"eval_time": "2m", "alertname": "BeaconliteUnhealthy", "exp_alerts": []},
                    {
                        "eval_time": "6m",
                        "alertname": "BeaconliteUnhealthy",
                        "exp_alerts": [alert("BeaconliteUnhealthy", {}, "")],
                    },
                    {"eval_time": "1m", "alertname": "BeaconliteLeakedThreads", "exp_alerts": []},
                    {
                        "eval_time": "3m",
                        "alertname": "BeaconliteLeakedThreads",
                        "exp_alerts": [alert("BeaconliteLeakedThreads", {}, "2")],
                    },
                ],  # fmt: skip
            }
        ],
    }
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    check = subprocess.run(
        ["promtool", "test", "rules", "cases.json"], cwd=tmp_path, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
