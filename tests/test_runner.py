from __future__ import annotations

import logging
import threading
import time

import pytest
from conftest import wait_for

from beaconlite import clock, store, timing
from beaconlite.errors import RunCancelled, SlotTaken
from beaconlite.runner import Runner


def run_to_end(runner: Runner, job: str, bound: float = 10.0, scheduled_at: float | None = None):
    live = runner.start(runner.config.job(job), "manual", scheduled_at or time.time())
    assert live.ended.wait(bound), f"run of {job} did not end within {bound}s"
    run, steps = store.get_run(live.run_id)
    return run, steps


def job(name: str, kind_lines: str, timeout: str = "5s", **keys) -> str:
    extra = "".join(f"{k} = {v!r}\n" for k, v in keys.items())
    return f'[[jobs]]\nname = "{name}"\ntimeout = "{timeout}"\n{extra}{kind_lines}\n'


def test_python_run_success_with_summary(runner):
    r = runner(job("j", 'run = "jobs:steps"\nparams = {results = ["ok", "ok"]}'))
    run, steps = run_to_end(r, "j")
    assert run.status == "success" and run.summary == '{"steps": 2}'
    assert [(s.name, s.status) for s in steps] == [("s0", "success"), ("s1", "success")]
    assert run.duration_s is not None and run.duration_s < 2
    assert run.instance_id == r.instance_id and run.heartbeat_at is not None


@pytest.mark.parametrize(
    "results,rate,expected",
    [
        (["ok", "ok", "ok", "fail"], 0.7, "warning"),
        (["ok", "ok", "ok", "fail"], 0.8, "error"),
        (["ok", "warn"], 1.0, "warning"),
        (["fail"], 0.0, "warning"),
        (["ok", "fail"], 1.0, "error"),
    ],
)
def test_status_from_steps(runner, results, rate, expected):
    r = runner(job("j", f'run = "jobs:steps"\nparams = {{results = {results!r}}}', min_success_rate=rate))
    run, steps = run_to_end(r, "j")
    assert run.status == expected, run.error
    if "fail" in results:
        failed = [s for s in steps if s.status == "error"]
        assert failed and "ValueError: step" in failed[0].error
        assert "ValueError" in run.output  # the traceback of the failure


def test_no_steps_outcomes(runner):
    r = runner(
        job("warn", 'run = "jobs:warn_only"')
        + job("boom", 'run = "jobs:raise_error"')
        + job("exit", 'run = "jobs:system_exit"')
        + job("noop", 'run = "beaconlite.builtin:noop"')
    )
    assert run_to_end(r, "warn")[0].status == "warning"
    boom = run_to_end(r, "boom")[0]
    assert boom.status == "error" and boom.error.startswith("RuntimeError: secret is")
    assert "Traceback" in boom.output
    assert run_to_end(r, "exit")[0].status == "error"  # even a BaseException is data
    assert run_to_end(r, "noop")[0].status == "success"


def test_secret_from_env_is_redacted(runner, monkeypatch):
    monkeypatch.setenv("TEST_SECRET", "hunter2-xyz")
    r = runner(job("boom", 'run = "jobs:raise_error"\nparams = {t = "${TEST_SECRET}"}'))
    run, _ = run_to_end(r, "boom")
    assert "hunter2-xyz" not in run.error and "***" in run.error
    assert "hunter2-xyz" not in run.output


def test_context_fields(runner):
    r = runner(job("j", 'run = "jobs:context_fields"', timeout="30s"))
    live = r.start(r.config.job("j"), "manual", 1_700_000_000.0)
    assert live.ended.wait(5)
    summary = __import__("json").loads(store.get_run(live.run_id)[0].summary)
    assert summary["run_id"] == live.run_id and summary["job"] == "j"
    assert summary["scheduled_at"].startswith("2023-11-14T22:13:20")
    assert 29 < summary["remaining"] <= 30


@pytest.mark.parametrize("route", ["hang", "trickle", "trickleheaders"])
def test_http_broken_off_at_the_deadline(runner, http_server, route):
    r = runner(
        '[http]\nread_timeout = "300s"\n'
        + job("j", f'run = "jobs:fetch"\nparams = {{url = "{http_server.url}/{route}"}}', timeout="1s")
    )
    t0 = time.monotonic()
    run, _ = run_to_end(r, "j")
    took = time.monotonic() - t0
    assert run.status == "timeout", run.error
    assert run.duration_s <= 1.3 and took < 2.0, (run.duration_s, took)
    assert "deadline" in run.error


def test_no_request_after_cancel_and_remaining_steps_not_run(runner, http_server):
    r = runner(
        job(
            "j", f'run = "jobs:many_requests"\nparams = {{url = "{http_server.url}/slow?0.1"}}', timeout="60s"
        )
    )
    live = r.start(r.config.job("j"), "manual", time.time())
    wait_for(lambda: http_server.count("/slow") >= 3, what="a few requests")
    at_abort = http_server.count("/slow")
    live.abort(RunCancelled, "cancelled by test")
    assert live.ended.wait(2)
    time.sleep(0.3)  # anything still on its way would have arrived
    assert http_server.count("/slow") - at_abort <= 1
    run, steps = store.get_run(live.run_id)
    assert run.status == "cancelled"
    assert len(steps) <= at_abort + 1  # the steps after the abort never started
    assert steps[-1].status == "cancelled"  # the step in flight takes the run's status
    assert all(s.status == "success" for s in steps[:-1])


def test_job_that_swallows_exceptions_still_ends(runner, http_server):
    r = runner(
        job(
            "j",
            f'run = "jobs:swallow_everything"\nparams = {{url = "{http_server.url}/hang"}}',
            timeout="0.5s",
        )
    )
    run, _ = run_to_end(r, "j", bound=3)
    assert run.status == "timeout" and run.duration_s < 1.0


def test_non_cooperative_sleep_is_recorded_and_leaked(runner, caplog):
    r = runner(job("j", 'run = "jobs:sleep_uncooperatively"', timeout="0.5s"), abort_grace="0.5s")
    caplog.set_level(logging.ERROR, logger="beaconlite.runner")
    t0 = time.monotonic()
    live = r.start(r.config.job("j"), "manual", time.time())
    assert live.ended.wait(3)
    assert time.monotonic() - t0 < 1.5  # deadline + abort_grace + a little
    run, _ = store.get_run(live.run_id)
    assert run.status == "timeout" and "abandoned" in run.error
    assert r.leaked_threads() == 1 and live.thread.is_alive()
    assert store.Instance.get_by_id(r.instance_id).leaked_threads == 1
    stuck = [rec.getMessage() for rec in caplog.records if "stuck at" in rec.getMessage()]
    assert stuck and "sleep_uncooperatively" in stuck[0]


def test_checkpoint_sees_elapsed_time_past_the_deadline(runner, monkeypatch):
    """A suspend stops the Timer's clock, not elapsed time: the checkpoint still aborts."""
    r = runner(job("j", 'run = "jobs:busy_with_checkpoints"', timeout="1h"))
    live = r.start(r.config.job("j"), "manual", time.time())
    real = clock.elapsed
    monkeypatch.setattr(clock, "elapsed", lambda: real() + 7200)  # 2 h asleep
    assert live.ended.wait(2)
    assert store.get_run(live.run_id)[0].status == "timeout"


def test_racing_finisher_keeps_the_first_status(runner):
    """The worker finishing while the timeout lands: exactly one terminal status, never two."""
    r = runner(job("j", 'run = "beaconlite.builtin:noop"', timeout="0.05s"))
    for i in range(30):
        live = r.start(r.config.job("j"), "manual", float(i))
        assert live.ended.wait(3)
        run = store.get_run(live.run_id)[0]
        assert run.status in ("success", "timeout")
    statuses = {s for (s,) in store.db.execute_sql("SELECT status FROM run").fetchall()}
    assert statuses <= {"success", "timeout"}


def test_a_slot_starts_once(runner):
    r = runner(job("j", 'run = "beaconlite.builtin:noop"'))
    r.start(r.config.job("j"), "schedule", 60.0).ended.wait(3)
    with pytest.raises(SlotTaken):
        r.start(r.config.job("j"), "schedule", 60.0)


# -- commands -----------------------------------------------------------------------------


# -- declarative checks -------------------------------------------------------------------


def test_run_thread_is_daemon_and_named(runner):
    r = runner(job("j", 'run = "jobs:sleep_uncooperatively"\nparams = {seconds = 0.3}'))
    before = set(threading.enumerate())
    live = r.start(r.config.job("j"), "manual", time.time())
    assert live.thread.daemon and live.thread.name.startswith(f"run-{live.run_id}-j")
    assert live.ended.wait(3)
    live.thread.join(3)  # and nothing of the run stays behind: no thread of its own, no timer
    assert [t.name for t in set(threading.enumerate()) - before] in ([], ["run-alarms"])


# -- hostile job code (SPEC 5, Faults): every run still ends, with its true status ---------


@pytest.mark.parametrize(
    "target,status,error",
    [
        ("raise_undescribable", "error", "could not be described"),
        ("raise_blocking_str", "error", "could not be described"),
        ("raise_surrogate", "error", "ValueError: bad byte \\udcff here"),
        ("raise_base_exception", "error", "Fatal: fatal"),
        ("raise_run_cancelled", "error", "RunCancelled: no abort is pending"),
        ("summary_tuple_key", "warning", "the summary is not JSON"),
        ("summary_unprintable", "warning", "the summary is not JSON"),
        ("summary_blocking", "warning", "the summary is not JSON"),
        ("summary_huge", "warning", "more than 65536"),
        ("undescribable_in_step", "error", "1 of 2 steps failed: hostile: the job's exception could not"),
    ],
)
def test_hostile_job_code_cannot_stop_its_run_from_ending(runner, monkeypatch, target, status, error):
    monkeypatch.setattr(timing, "DESCRIBE_TIMEOUT", 0.2)
    r = runner(job("j", f'run = "jobs:{target}"', timeout="30s"))
    t0 = time.monotonic()
    run, _ = run_to_end(r, "j", bound=5)
    assert time.monotonic() - t0 < 2, "ended long after the job did (by the deadline?)"
    assert run.status == status and error in run.error
    assert r.live_runs() == [] and r.pending_ends() == []


def test_a_thread_left_behind_cannot_add_a_step_after_the_run_returned(runner, tmp_path):
    report = tmp_path / "late.txt"
    r = runner(job("j", f'run = "jobs:step_after_return"\nparams = {{report = "{report}", delay = 0.2}}'))
    run, _ = run_to_end(r, "j")
    wait_for(report.exists, 3, what="the leftover thread to try its step")
    assert report.read_text() == "RunAborted"
    run, steps = store.get_run(run.id)
    assert run.status == "success" and steps == []
