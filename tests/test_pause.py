"""Pause and resume (SPEC section 3): refused by the write that would record the fire, kept
across restarts, nothing owed for the paused span, held fires and retries dropped."""

from __future__ import annotations

import json
import time

from conftest import wait_for
from test_daemon import cli

EVERY_SECOND = '[[jobs]]\nname = "tick"\nschedule = "every 1s"\nrun = "beaconlite.builtin:noop"\n'


def test_pause_stops_firing_across_a_restart_and_resume_owes_nothing(daemon):
    d = daemon(EVERY_SECOND)
    wait_for(lambda: len(d.runs("tick")) >= 2, 5, what="runs")
    out = cli("-c", d.config, "pause", "tick")
    assert out.returncode == 0 and "paused tick" in out.stdout, out.stderr
    paused_at = time.time()
    time.sleep(2.5)
    assert not [r for r in d.runs("tick") if (r.started_at or r.finished_at) > paused_at]  # no row at all
    status = json.loads(cli("-c", d.config, "status", "--json").stdout)["jobs"][0]
    assert status["paused"] is True and "@" in status["paused_by"] and status["paused_at"].endswith("Z")
    assert status["next_run_at"] is None  # nothing will fire
    assert "tick (paused)" in cli("-c", d.config, "status").stdout
    assert "already paused" in cli("-c", d.config, "pause", "tick").stdout
    assert d.stop() == 0
    d.start()  # the pause is kept in the database
    time.sleep(2.5)
    assert not [r for r in d.runs("tick") if (r.started_at or r.finished_at) > paused_at]
    out = cli("-c", d.config, "resume", "tick")
    assert out.returncode == 0 and "resumed tick" in out.stdout
    resumed_at = time.time()
    wait_for(
        lambda: [r for r in d.runs("tick") if r.started_at and r.started_at > resumed_at], 3, what="a run"
    )
    time.sleep(1.5)
    after = [r for r in d.runs("tick") if (r.started_at or r.finished_at) > paused_at]
    assert all(r.trigger == "schedule" and r.status != "skipped" for r in after), [
        (r.trigger, r.status, r.error) for r in after
    ]  # no catch-up run and no skipped row for the paused span
    assert all(r.scheduled_at > resumed_at - 1 for r in after)
    assert d.stop() == 0


def test_pause_without_a_daemon_and_manual_runs_still_work(daemon, make_config):
    d = daemon(EVERY_SECOND)
    wait_for(lambda: d.runs("tick"), 5, what="a run")
    assert d.stop() == 0
    out = cli("-c", d.config, "pause", "tick")
    assert out.returncode == 0, out.stderr
    assert json.loads(cli("-c", d.config, "status", "--json").stdout)["jobs"][0]["paused"] is True
    out = cli("-c", d.config, "run", "tick")
    assert out.returncode == 0 and "success" in out.stdout  # a manual run of a paused job
    assert cli("-c", d.config, "pause", "nosuch").returncode == 1


def test_a_pending_retry_of_a_paused_job_is_dropped_and_notified_once(daemon, http_server):
    d = daemon(
        f"""
        [[jobs]]
        name = "flaky"
        run = "jobs:raise_error"
        retries = 2
        retry_delay = "2s"
        [[notify]]
        url = "{http_server.url}/sink"
        on = ["error", "skipped"]
        """
    )
    assert cli("-c", d.config, "trigger", "flaky").returncode == 0
    wait_for(lambda: [r for r in d.runs("flaky") if r.status == "error"], 5, what="the first attempt")
    assert cli("-c", d.config, "pause", "flaky").returncode == 0
    wait_for(lambda: [r for r in d.runs("flaky") if r.status == "skipped"], 3, what="the dropped retry")
    time.sleep(2.5)  # past the retry's time: it did not run
    rows = d.runs("flaky")
    assert [(r.status, r.attempt) for r in rows] == [("error", 1), ("skipped", 2)]
    assert rows[1].error == "pending retry dropped: paused"
    wait_for(lambda: len(http_server.bodies) >= 2, 5, what="notifications")
    events = sorted(json.loads(b)["event"] for b in http_server.bodies)
    assert events == ["error", "skipped"]  # the outcome the retry followed, once; the skip
    error = next(json.loads(b) for b in http_server.bodies if json.loads(b)["event"] == "error")
    assert error["id"] == rows[0].id and error["attempts"] == 1
    assert d.stop() == 0
