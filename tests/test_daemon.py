"""Whole-process behaviour: real daemon processes on temporary databases."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

from conftest import DAEMON_DEFAULTS, subprocess_env, wait_for


def cli(*args, timeout=30):
    return subprocess.run(
        [sys.executable, "-m", "beaconlite", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
    )


def overlaps(runs) -> bool:
    spans = sorted((r.started_at, r.finished_at or time.time()) for r in runs if r.started_at)
    return any(b[0] < a[1] for a, b in zip(spans, spans[1:]))


def test_overlap_skip(daemon):
    d = daemon("""
        [[jobs]]
        name = "slow"
        schedule = "every 1s"
        command = ["sleep", "2.5"]
    """)
    wait_for(lambda: sum(r.status == "skipped" for r in d.runs("slow")) >= 3, 10, what="skipped fires")
    runs = d.runs("slow")
    assert not overlaps([r for r in runs if r.status != "skipped"])
    skipped = [r for r in runs if r.status == "skipped"]
    assert all(r.started_at is None and r.duration_s is None and "overlap" in r.error for r in skipped)


def test_overlap_replace(daemon):
    d = daemon("""
        [[jobs]]
        name = "slow"
        schedule = "every 1s"
        overlap = "replace"
        command = ["sleep", "30"]
    """)
    wait_for(
        lambda: len([r for r in d.runs("slow") if r.status == "cancelled"]) >= 2, 10, what="replaced runs"
    )
    runs = d.runs("slow")
    cancelled = [r for r in runs if r.status == "cancelled"]
    assert all("replaced by a newer run" in r.error for r in cancelled)
    assert sum(r.status == "running" for r in runs) <= 2  # the old one is on its way out


def test_overlap_queue(daemon):
    d = daemon("""
        [[jobs]]
        name = "slow"
        schedule = "every 1s"
        overlap = "queue"
        command = ["sleep", "2.5"]
    """)
    wait_for(lambda: sum(r.status == "success" for r in d.runs("slow")) >= 2, 12, what="two runs")
    runs = [r for r in d.runs("slow") if r.status != "skipped"]
    assert not overlaps(runs)
    first, second = runs[0], runs[1]
    # the queued fire starts right when the live run ends, not at the next slot
    assert second.started_at - first.finished_at < 0.3
    assert any("already queued" in (r.error or "") for r in d.runs("slow"))


def test_trigger_wait_cancel_and_exit_codes(daemon, http_server):
    d = daemon(f"""
        [[jobs]]
        name = "ok"
        run = "beaconlite.builtin:noop"
        [[jobs]]
        name = "fails"
        command = ["sh", "-c", "exit 3"]
        [[jobs]]
        name = "requests"
        run = "jobs:many_requests"
        timeout = "60s"
        params = {{url = "{http_server.url}/slow?0.1"}}
    """)
    out = cli("-c", d.config, "trigger", "ok")
    assert out.returncode == 0 and out.stdout.startswith("run ")
    assert cli("-c", d.config, "trigger", "ok", "--wait").returncode == 0
    out = cli("-c", d.config, "trigger", "fails", "--wait", "--json")
    assert out.returncode == 1 and '"status": "error"' in out.stdout
    assert cli("-c", d.config, "trigger", "nope").returncode == 2
    out = cli("-c", d.config, "trigger", "requests")
    run_id = int(out.stdout.split()[1])
    wait_for(lambda: http_server.count("/slow") >= 3, 10, what="requests")
    t0 = time.monotonic()
    out = cli("-c", d.config, "cancel", run_id)
    hits_at_cancel = http_server.count("/slow")
    assert out.returncode == 0 and "cancelled" in out.stdout
    assert time.monotonic() - t0 < 3.5  # a process start, the daemon's 2 s pickup, the end
    time.sleep(0.5)
    assert http_server.count("/slow") - hits_at_cancel <= 1
    assert cli("-c", d.config, "cancel", run_id).returncode == 1  # not live any more
    assert cli("-c", d.config, "cancel", 99999).returncode == 1


def test_trigger_without_daemon_exit_1(make_config):
    path = make_config("[[jobs]]\nname = 'ok'\nrun = 'beaconlite.builtin:noop'\n")
    out = cli("-c", path, "trigger", "ok")
    assert out.returncode == 1 and "no daemon is running" in out.stderr


def test_second_daemon_on_the_same_database_exits_1(daemon):
    d = daemon("")
    out = cli("-c", d.config, "daemon")
    assert out.returncode == 1
    assert f"pid {d.proc.pid}" in out.stderr and out.stderr.count("\n") == 1


def test_sigterm_with_a_hung_run(daemon):
    d = daemon("""
        [[jobs]]
        name = "hung"
        run = "jobs:sleep_uncooperatively"
        timeout = "1h"
    """)
    assert cli("-c", d.config, "trigger", "hung").returncode == 0
    wait_for(lambda: any(r.status == "running" for r in d.runs("hung")), 5, what="the run")
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.proc.wait(5) == 0
    assert time.monotonic() - t0 < 0.5 + 1.0  # abort_grace + 1 s
    (run,) = d.runs("hung")
    assert run.status == "cancelled" and "daemon stopping" in run.error


def test_kill9_mid_run_orphan_is_timeout_before_the_first_new_fire(daemon):
    d = daemon("""
        [[jobs]]
        name = "tick"
        schedule = "every 1s"
        command = ["sleep", "30"]
    """)
    wait_for(lambda: any(r.status == "running" for r in d.runs("tick")), 5, what="a live run")
    d.kill9()
    orphan = next(r for r in d.runs("tick") if r.status == "running")
    d.start()
    runs = d.runs("tick")
    flipped = next(r for r in runs if r.id == orphan.id)
    assert flipped.status == "timeout" and flipped.error.startswith("orphaned: daemon pid")
    newer = [r for r in runs if r.id > orphan.id and r.started_at]
    assert all(r.started_at >= flipped.finished_at for r in newer)
    events = [e.get("event") for e in d.events()]
    second_start = len(events) - 1 - events[::-1].index("daemon.start")
    assert "reap" in events[:second_start]


def test_sighup_good_and_bad_config(daemon):
    d = daemon("""
        [[jobs]]
        name = "a"
        schedule = "every 1s"
        run = "beaconlite.builtin:noop"
    """)
    wait_for(lambda: d.runs("a"), 5, what="a run of a")
    text = d.config.read_text().replace('name = "a"', 'name = "b"')
    d.config.write_text(text)
    d.signal(signal.SIGHUP)
    wait_for(lambda: d.runs("b"), 5, what="a run of the new job b")
    count_a = len(d.runs("a"))
    time.sleep(1.5)
    assert len(d.runs("a")) == count_a  # removed at once
    d.config.write_text(text + "\n[[jobs]]\nname = 'broken'\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in d.log(), 5, what="the refusal")
    n = len(d.runs("b"))
    wait_for(lambda: len(d.runs("b")) > n, 5, what="b to keep running")
    assert d.proc.poll() is None


def test_retries(daemon):
    d = daemon("""
        [[jobs]]
        name = "flaky"
        command = ["sh", "-c", "exit 1"]
        retries = 2
        retry_delay = "0.2s"
    """)
    assert cli("-c", d.config, "trigger", "flaky").returncode == 0
    wait_for(
        lambda: len(d.runs("flaky")) == 3 and all(r.status != "running" for r in d.runs("flaky")),
        10,
        what="retries",
    )
    runs = d.runs("flaky")
    assert [(r.trigger, r.attempt) for r in runs] == [("manual", 1), ("retry", 2), ("retry", 3)]
    assert len({r.scheduled_at for r in runs}) == 1  # a retry keeps its slot


def test_downtime_one_catchup_and_one_skipped_row(daemon):
    d = daemon("""
        [[jobs]]
        name = "tick"
        schedule = "every 1s"
        misfire_grace = "1ms"
        run = "beaconlite.builtin:noop"
    """)
    wait_for(lambda: d.runs("tick"), 5, what="a first run")
    assert d.stop() == 0
    before = len(d.runs("tick"))
    time.sleep(4)
    d.start()
    wait_for(lambda: any(r.trigger == "catchup" for r in d.runs("tick")), 5, what="the catch-up")
    new = d.runs("tick")[before:]
    catchups = [r for r in new if r.trigger == "catchup"]
    missed = [r for r in new if r.status == "skipped"]
    assert len(catchups) == 1 and len(missed) == 1
    assert "missed" in missed[0].error and "not running" in missed[0].error
    assert int(missed[0].error.split()[1]) >= 2


def test_sigterm_on_stop_finish_waits_for_live_runs(daemon):
    d = daemon(
        """
        [[jobs]]
        name = "short"
        command = ["sleep", "1.5"]
        [[jobs]]
        name = "queued"
        command = ["sleep", "2.5"]
        overlap = "queue"
        """,
        defaults=DAEMON_DEFAULTS + 'on_stop = "finish"\n',
    )
    assert cli("-c", d.config, "trigger", "short").returncode == 0
    assert cli("-c", d.config, "trigger", "queued").returncode == 0
    assert "queued" in cli("-c", d.config, "trigger", "queued").stdout  # held behind the first
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.proc.wait(15) == 0
    assert time.monotonic() - t0 > 1.0  # it waited for the live runs
    statuses = {(r.job, r.status) for r in d.runs()}
    assert ("short", "success") in statuses and ("queued", "success") in statuses
    held = [r for r in d.runs("queued") if r.status == "skipped"]
    assert len(held) == 1 and "queued fire dropped" in held[0].error  # does not survive a stop
    assert not [r for r in d.runs() if r.status == "running"]


def test_thinned_slots_are_counted_from_the_schedule(tmp_db, make_config):
    """A long gap handed over as [first, latest]: the skipped row still says how many."""
    from beaconlite import clock, store
    from beaconlite.config import load_config
    from beaconlite.loader import Code
    from beaconlite.runner import Runner
    from beaconlite.slots import Slots

    config = load_config(
        make_config("[[jobs]]\nname = 'tick'\nschedule = 'every 1s'\nrun = 'beaconlite.builtin:noop'\n")
    )
    slots = Slots(config, Runner(config, Code(), None))
    now = float(int(clock.wall()))
    slots.fire("tick", [now - 86400, now], now, "the machine was suspended for 1d")
    (skipped,) = [r for r, _, _ in store.list_runs(status="skipped")]
    assert skipped.error.startswith("missed 86400 fire(s) between")  # all but the latest
    assert skipped.scheduled_at == now - 86400


def test_a_refused_trigger_prints_its_skipped_row_as_json(daemon, tmp_path):
    d = daemon(
        f"""
        [[jobs]]
        name = "busy"
        run = "jobs:wait_for_file"
        params = {{path = "{tmp_path / "go"}"}}
        """
    )
    assert cli("-c", d.config, "trigger", "busy").returncode == 0
    out = cli("-c", d.config, "trigger", "busy", "--wait", "--json")
    assert out.returncode == 1, out.stderr
    row = json.loads(out.stdout)
    assert row["status"] == "skipped" and row["error"].startswith("overlap:")
    (tmp_path / "go").touch()
    assert d.stop() == 0


def test_text_log_lines_about_a_run_name_it(daemon):
    d = daemon(
        '[[jobs]]\nname = "chatty"\nrun = "jobs:chatty"\nparams = {tag = "x"}\n',
        defaults=DAEMON_DEFAULTS.replace('log_format = "json"', 'log_format = "text"'),
    )
    assert cli("-c", d.config, "trigger", "chatty", "--wait").returncode == 0
    assert d.stop() == 0
    lines = [line for line in d.log().splitlines() if "ctx line by x" in line or "success in" in line]
    assert len(lines) == 2 and all("chatty #1: " in line for line in lines), lines
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ ", lines[0])  # local time with its zone


def test_status_shows_each_jobs_next_fire_as_the_slots_pass(daemon):
    """The daemon publishes only the fire times that moved; each job's stays its next slot."""
    d = daemon("""
        [[jobs]]
        name = "often"
        schedule = "every 1s"
        run = "beaconlite.builtin:noop"
        [[jobs]]
        name = "rarely"
        schedule = "every 1h"
        run = "beaconlite.builtin:noop"
    """)

    def next_fires():
        out = cli("-c", d.config, "status", "--json")
        assert out.returncode == 0, out.stderr
        return {j["name"]: j["next_run_at"] for j in json.loads(out.stdout)["jobs"]}

    first = next_fires()
    wait_for(lambda: next_fires()["often"] != first["often"], 5, what="a moved fire time")
    for _ in range(3):
        fires, now = next_fires(), time.time()
        assert -1.0 < iso_seconds(fires["often"]) - now <= 1.5, fires  # published by the tick
        assert fires["rarely"] == first["rarely"]
        time.sleep(0.5)


def iso_seconds(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
