"""SPEC section 5, Faults: what every fault inside beaconlite's own machinery must still end in.

Real daemons, real locks held by another process, a real full disk (tmpfs), real kill -9,
SIGSTOP and forks. Each test names the failure it guards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from conftest import DAEMON_DEFAULTS, ExternalLock, subprocess_env, wait_for

from beaconlite import alarms, journal, store, timing
from beaconlite.errors import RunCancelled, WriteFailed
from beaconlite.runner import Runner


def cli(*args, timeout=30, **env):
    return subprocess.run(
        [sys.executable, "-m", "beaconlite", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(**env),
    )


def rows(
    database, sql="SELECT id, job, status, scheduled_at, slots, last_slot_at, error FROM run ORDER BY id"
):
    """Read the database with plain sqlite3 (no store state in this process)."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def accounted_once(database, job: str, period: float, first: float, last: float) -> list[str]:
    """Problems with 'every slot of [first, last] has exactly one attempt-1 row' for an
    `every PERIOD` job (SPEC section 3); an empty list when it holds."""
    found: dict[float, int] = {}
    for scheduled_at, slots, last_slot_at in rows(
        database,
        f"SELECT scheduled_at, slots, last_slot_at FROM run WHERE job = '{job}' AND attempt = 1",
    ):
        count = slots or 1
        for i in range(count):
            slot = round(scheduled_at + i * period, 3)
            found[slot] = found.get(slot, 0) + 1
        if count > 1:
            assert abs(scheduled_at + (count - 1) * period - last_slot_at) < 1e-3
    problems = []
    slot = first
    while slot <= last:
        n = found.get(round(slot, 3), 0)
        if n != 1:
            problems.append(f"{job} slot {slot}: {n} rows")
        slot += period
    return problems


# -- 1. hostile job code, through the real daemon ------------------------------------------


def test_hostile_exceptions_end_their_runs_in_the_real_daemon(daemon):
    d = daemon(
        """
        [[jobs]]
        name = "undescribable"
        schedule = "every 1s"
        run = "jobs:raise_undescribable"
        [[jobs]]
        name = "surrogate"
        schedule = "every 1s"
        run = "jobs:raise_surrogate"
        [[jobs]]
        name = "not-json"
        schedule = "every 1s"
        run = "jobs:summary_tuple_key"
        """
    )

    def ended(job, status):
        return sum(r.status == status for r in d.runs(job)) >= 3

    wait_for(
        lambda: (
            ended("undescribable", "error") and ended("surrogate", "error") and ended("not-json", "warning")
        ),
        10,
        what="three ended runs of each hostile job",
    )
    runs = d.runs()
    assert not [r for r in runs if r.status == "skipped" and "overlap" in (r.error or "")]
    assert all("could not be described" in r.error for r in d.runs("undescribable") if r.status == "error")
    assert d.stop() == 0
    assert not [r for r in d.runs() if r.status == "running"]


def test_hostile_exception_in_a_foreground_run(make_config):
    config = make_config('[[jobs]]\nname = "j"\nrun = "jobs:raise_undescribable"\ntimeout = "60s"\n')
    t0 = time.monotonic()
    out = cli("-c", config, "run", "j")
    assert out.returncode == 1 and time.monotonic() - t0 < 10, out.stderr
    assert "error" in out.stdout and "could not be described" in out.stdout


def test_on_stop_finish_exits_with_a_hostile_job(daemon):
    d = daemon(
        """
        [[jobs]]
        name = "undescribable"
        schedule = "every 1s"
        run = "jobs:raise_undescribable"
        """,
        defaults=DAEMON_DEFAULTS + 'on_stop = "finish"\n',
    )
    wait_for(lambda: len(d.runs("undescribable")) >= 2, 5, what="runs")
    t0 = time.monotonic()
    assert d.stop() == 0 and time.monotonic() - t0 < 5


# -- 2 and 5. the database refuses writes: ends kept, slots accounted for -----------------


def test_a_refused_end_is_kept_and_lands_with_its_true_status(runner, store_faults, tmp_path):
    """store.finish_run raising: the run is ended-but-unrecorded, not stuck running."""
    go = tmp_path / "go"
    r = runner(
        f'[[jobs]]\nname = "j"\nmax_instances = 1\nrun = "jobs:wait_for_file"\nparams = {{path = "{go}"}}\n'
    )
    store_faults.fail_until_cleared("locked")
    with pytest.raises(WriteFailed):  # nothing starts while no write lands
        r.start(r.config.job("j"), "manual", 1.0)
    store_faults.clear()
    live = r.start(r.config.job("j"), "manual", 2.0)
    store_faults.fail_until_cleared("io")  # before the run ends: its end is refused
    go.touch()
    wait_for(lambda: r.pending_ends() == [live], 3, what="the run's end, pending")
    assert r.live_runs() == []  # no longer blocks max_instances
    assert store.run_status(live.run_id) == "running"
    assert r.record_pending() == 1  # still refused
    store_faults.clear()
    ends = []
    r.on_end = ends.append
    # The run's thread and the tick may both write a pending end: its follow-ups run once.
    writers = [threading.Thread(target=r.record_pending) for _ in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(5)
    assert r.record_pending() == 0
    assert store.run_status(live.run_id) == "success" and live.ended.is_set()
    assert len(ends) == 1, ends


def test_an_external_lock_of_10s_with_three_jobs_every_second(daemon, tmp_path):
    """Every run's true status lands within 2 s of the release; every slot is accounted for
    exactly once (a run, or a skipped row naming the real cause)."""
    d = daemon(
        """
        [[jobs]]
        name = "a"
        schedule = "every 1s"
        run = "beaconlite.builtin:noop"
        [[jobs]]
        name = "b"
        schedule = "every 1s"
        command = ["true"]
        [[jobs]]
        name = "c"
        schedule = "every 1s"
        run = "jobs:wait_for_file"
        params = {path = "%s"}
        timeout = "30s"
        """
        % (tmp_path / "go")
    )
    wait_for(lambda: len(d.runs("a")) >= 2 and d.runs("c"), 5, what="first runs")
    started = time.time()
    with ExternalLock(d.database) as lock:
        (tmp_path / "go").touch()  # "c"'s live run ends during the outage: its end must wait
        time.sleep(10)
        released = lock.release()
    wait_for(
        lambda: not [r for r in d.runs() if r.status == "running" and r.scheduled_at < started + 10],
        2.5,
        what="every run's end to land",
    )
    landed = time.monotonic() - released
    wait_for(lambda: '"store.outage_end"' in d.log(), 5, what="the outage's end in the log")
    end = time.time() - 1
    started_before = [r for r in d.runs("c") if r.scheduled_at < started and r.status != "skipped"]
    assert started_before and all(r.status == "success" for r in started_before)  # its true status
    for job in ("a", "b", "c"):
        first = min(r.scheduled_at for r in d.runs(job))
        assert accounted_once(d.database, job, 1.0, first, int(end)) == [], job
    skips = [r for r in d.runs() if r.status == "skipped" and r.slots > 1]
    assert skips and all("the database was not writable: database is locked" in r.error for r in skips)
    log = d.log()
    assert log.count('"store.outage"') == 1 and log.count('"store.outage_end"') == 1
    assert '"daemon.gap"' not in log  # waiting on the database is not a freeze
    assert landed < 2.5
    assert d.stop() == 0


def test_a_full_disk_for_a_few_seconds(daemon, small_disk, tmp_path):
    """Disk full while jobs fire every second: every slot has its row afterwards, and the
    log names the real error ("database or disk is full"), not a secondary one."""
    config = tmp_path / "beaconlite.toml"
    config.write_text(
        DAEMON_DEFAULTS.replace('database = "state/b.db"', f'database = "{small_disk.path}/b.db"')
        + """
[[jobs]]
name = "tick"
schedule = "every 1s"
command = ["echo", "hello"]
"""
    )
    from conftest import DaemonProcess

    d = DaemonProcess(config, small_disk.path / "b.db", tmp_path / "full.log", subprocess_env()).start()
    try:
        wait_for(lambda: len(d.runs("tick")) >= 2, 5, what="first runs")
        small_disk.fill()
        wait_for(lambda: '"store.outage"' in d.log(), 5, what="the outage to start")
        time.sleep(2)  # slots come due while nothing can be written
        small_disk.free()
        wait_for(lambda: '"store.outage_end"' in d.log(), 5, what="the outage to end")
        time.sleep(1.5)
        log = d.log()
        assert "database or disk is full" in log
        assert "no transaction is active" not in log
        # Some writes land while the disk is full (SQLite reuses its free pages): still one
        # outage, logged once when it starts and once when it ends.
        assert log.count('"store.outage"') == 1 and log.count('"store.outage_end"') == 1
        first = min(r.scheduled_at for r in d.runs("tick"))
        assert accounted_once(d.database, "tick", 1.0, first, int(time.time()) - 1) == []
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.proc.kill()


# -- 3. a stop while the database is locked -------------------------------------------------


def test_sigterm_while_the_database_is_locked_ends_cleanly(daemon, tmp_path):
    d = daemon(
        """
        [[jobs]]
        name = "j"
        schedule = "every 1s"
        run = "jobs:wait_for_file"
        params = {path = "%s"}
        timeout = "30s"
        """
        % (tmp_path / "never")
    )
    wait_for(lambda: [r for r in d.runs("j") if r.status == "running"], 5, what="a live run")
    with ExternalLock(d.database) as lock:
        d.signal(signal.SIGTERM)
        time.sleep(2)  # the stop has aborted the run and is trying to write its end
        lock.release()
        code = d.proc.wait(15)
    d.log_file.close()
    assert code == 0, d.log()  # every end was recorded once the lock went
    assert "Traceback" not in d.log()
    assert not [r for r in d.runs() if r.status == "running"]
    assert [r.error for r in d.runs("j") if r.status == "cancelled"]


def test_a_stop_that_cannot_write_keeps_the_ends_for_the_next_start(
    inproc_daemon, store_faults, monkeypatch, tmp_path
):
    monkeypatch.setattr(timing, "STOP_WRITE_WAIT", 0.5)
    go = tmp_path / "go"
    d = inproc_daemon(
        f"""
        [[jobs]]
        name = "j"
        run = "jobs:wait_for_file"
        params = {{path = "{go}"}}
        """
    )
    runner: Runner = d.runner
    run = runner.start(d.config.job("j"), "manual", time.time())
    # The run ends while the database refuses every write: its end is pending at the stop.
    store_faults.fail_until_cleared("full")
    go.touch()
    wait_for(lambda: runner.pending_ends() == [run], 3, what="the manual run's end, pending")
    t0 = time.monotonic()
    d.request_stop()
    d.thread.join(10)
    assert not d.thread.is_alive() and time.monotonic() - t0 < 5
    assert d.result["code"] == 1
    entries = [
        json.loads(line) for line in journal.journal_path(d.config.daemon.database).read_text().splitlines()
    ]
    assert run.run_id in [e["run_id"] for e in entries if e["kind"] == "end"]
    store_faults.clear()
    # The next start records the true status before the reaper could call it an orphan.
    d2 = inproc_daemon("""
        [[jobs]]
        name = "j"
        run = "beaconlite.builtin:noop"
        """)
    assert store.run_status(run.run_id) == "success"
    assert not journal.journal_path(d2.config.daemon.database).exists()


# -- 4. threads that cannot start; leaked threads ------------------------------------------


@pytest.mark.parametrize("which", ["run", "alarms"])
def test_a_run_whose_thread_or_timer_cannot_start_is_recorded_error(runner, monkeypatch, which):
    """A run's own thread ("run-N-job") or the thread that rings its deadline ("run-alarms",
    not started yet in this process)."""
    r = runner('[[jobs]]\nname = "j"\nrun = "beaconlite.builtin:noop"\n')
    monkeypatch.setattr(alarms, "runs", alarms.Alarms("run-alarms"))
    real_start = threading.Thread.start

    def start(self):
        if (self.name == "run-alarms") == (which == "alarms") and self.name.startswith("run-"):
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    live = r.start(r.config.job("j"), "manual", 1.0)
    assert live.ended.wait(3)
    run = store.get_run(live.run_id)[0]
    assert run.status == "error" and "cannot start a thread: can't start new thread" in run.error


def test_leaked_threads_restart_the_daemon_with_exit_1(daemon):
    d = daemon(
        """
        [[jobs]]
        name = "stuck"
        schedule = "every 1s"
        run = "jobs:sleep_uncooperatively"
        timeout = "0.3s"
        max_instances = 5
        """,
        defaults=DAEMON_DEFAULTS + "max_leaked_threads = 2\n",
    )
    code = d.proc.wait(15)
    d.log_file.close()
    assert code == 1
    assert "restarting to reclaim 2 leaked thread(s)" in d.log()
    assert not [r for r in d.runs() if r.status == "running"]


# -- 6. someone else ended the run ----------------------------------------------------------


def test_runs_reaped_while_their_daemon_was_frozen_write_and_send_nothing_more(daemon, http_server):
    """Two live runs reaped by `beaconlite reap` while the daemon is SIGSTOPped: one notices
    at its next step write, the other (no steps) at the next heartbeat; after SIGCONT
    neither writes a step or sends a request."""
    d = daemon(
        f"""
        [[jobs]]
        name = "slow"
        run = "jobs:steps_forever"
        timeout = "60s"
        [[jobs]]
        name = "poller"
        run = "jobs:requests_forever"
        params = {{url = "{http_server.url}/ok"}}
        timeout = "60s"
        """
    )
    for job in ("slow", "poller"):
        out = cli("-c", d.config, "trigger", job)
        assert out.returncode == 0, out.stderr
    wait_for(lambda: len(rows(d.database, "SELECT id FROM step")) >= 3, 5, what="steps")
    wait_for(lambda: http_server.count("/ok") >= 3, 5, what="requests")
    d.signal(signal.SIGSTOP)
    try:
        time.sleep(2.5)  # past orphan_after (2 s)
        out = cli("-c", d.config, "reap", "--json")
        assert out.returncode == 0 and len(json.loads(out.stdout)["reaped"]) == 2, out.stdout
    finally:
        d.signal(signal.SIGCONT)
    steps_at_reap = len(rows(d.database, "SELECT id FROM step"))
    time.sleep(1.5)  # a tick and a heartbeat
    settled = http_server.count("/ok")
    time.sleep(1.0)
    assert http_server.count("/ok") == settled, d.log()  # no zombie requests
    assert len(rows(d.database, "SELECT id FROM step")) <= steps_at_reap + 1  # one in flight at most
    assert rows(d.database, "SELECT status FROM run") == [("timeout",), ("timeout",)]
    assert not rows(d.database, "SELECT id FROM step WHERE status = 'running'")
    assert d.stop() == 0, d.log()


# -- 7. the daemon lock and a job's forked child ---------------------------------------------


def test_a_forked_child_does_not_keep_the_daemon_lock(daemon, tmp_path):
    pidfile = tmp_path / "child.pid"
    d = daemon(
        f"""
        [[jobs]]
        name = "forker"
        run = "jobs:fork_a_child"
        params = {{pidfile = "{pidfile}", seconds = 30}}
        """
    )
    assert cli("-c", d.config, "trigger", "forker").returncode == 0
    wait_for(pidfile.exists, 5, what="the child's pid")
    child = int(pidfile.read_text())
    try:
        d.kill9()
        os.kill(child, 0)  # the child lives on
        out = cli("-c", d.config, "status", "--json")
        assert json.loads(out.stdout)["daemon"]["state"] == "stopped"
        d.start()  # a new daemon starts while the child lives
        assert d.proc.poll() is None
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- 8. the database file deleted or replaced -------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_deleted_or_replaced_stops_the_daemon(daemon, tmp_path, how):
    d = daemon('[[jobs]]\nname = "j"\nschedule = "every 1s"\nrun = "beaconlite.builtin:noop"\n')
    if how == "deleted":
        d.database.unlink()
    else:
        shutil.copy(d.database, tmp_path / "copy.db")
        os.replace(tmp_path / "copy.db", d.database)
    t0 = time.monotonic()
    code = d.proc.wait(5)
    d.log_file.close()
    assert code == 1 and time.monotonic() - t0 < 3
    assert f"was {how} under the running daemon" in d.log()
    if how == "deleted":
        assert not d.database.exists()  # no thread of the daemon quietly made a new, empty one


# -- 9. the compare-and-set, made to race on purpose -----------------------------------------


def test_a_late_finisher_never_overwrites_the_first_end(runner, tmp_path):
    """The reaper (or a cancel of an orphan) records the run first; the worker finishes after.
    Without `WHERE status = 'running'` in finish_run the worker's success would overwrite it."""
    go = tmp_path / "go"
    r = runner(f'[[jobs]]\nname = "j"\nrun = "jobs:wait_for_file"\nparams = {{path = "{go}"}}\n')
    live = r.start(r.config.job("j"), "manual", 1.0)
    assert store.finish_abandoned(live.run_id, "timeout", "orphaned: test", time.time())
    go.touch()
    assert live.ended.wait(3)
    run = store.get_run(live.run_id)[0]
    assert (run.status, run.error) == ("timeout", "orphaned: test")


def test_a_cancel_recorded_elsewhere_stops_the_run_at_its_next_step(runner):
    r = runner('[[jobs]]\nname = "j"\nrun = "jobs:steps_forever"\nparams = {step = 0.05}\n')
    live = r.start(r.config.job("j"), "manual", 1.0)
    wait_for(lambda: len(store.get_run(live.run_id)[1]) >= 2, 3, what="steps")
    assert store.finish_abandoned(live.run_id, "cancelled", "cancelled (test)", time.time())
    assert live.ended.wait(2)
    assert isinstance(live.aborted, RunCancelled) and live.disowned == "cancelled"
    count = len(store.get_run(live.run_id)[1])
    time.sleep(0.3)
    assert len(store.get_run(live.run_id)[1]) == count
    assert store.get_run(live.run_id)[0].error == "cancelled (test)"


def test_a_stop_in_the_middle_of_a_burst_is_prompt_and_loses_no_slot(daemon):
    """SIGTERM just after 1,200 slots came due at once: the stop does not wait for the whole
    burst to be recorded, and after the next start every slot of every job has exactly one
    row (a run, or the skip that counts it as missed while the daemon was stopped)."""
    jobs = "".join(
        f'[[jobs]]\nname = "j{i:04d}"\nschedule = "every 2s"\nrun = "beaconlite.builtin:noop"\n'
        for i in range(1200)
    )
    d = daemon(jobs, defaults=DAEMON_DEFAULTS.replace('log_level = "debug"', 'log_level = "info"')
               + "max_concurrent_runs = 2000\n")  # fmt: skip
    wait_for(lambda: len(d.runs()) >= 1200, 15, what="a first burst")
    slot = (time.time() // 2 + 1) * 2
    time.sleep(max(0.0, slot + 0.01 - time.time()))
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 3
    d.start()
    wait_for(
        lambda: len({r.job for r in d.runs() if r.scheduled_at >= slot}) == 1200, 15, what="the next slots"
    )
    assert d.stop() == 0
    for i in range(1200):
        job = f"j{i:04d}"
        first = min(r.scheduled_at for r in d.runs(job))
        assert accounted_once(d.database, job, 2.0, first, slot) == [], job
    assert not [r for r in d.runs() if r.status == "running"]
