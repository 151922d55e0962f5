from __future__ import annotations

import logging
import os
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


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_command_exit_codes(runner):
    r = runner(
        job("ok", 'command = ["sh", "-c", "echo hello; echo oops >&2"]')
        + job("warn", 'command = ["sh", "-c", "exit 4"]\nwarning_exit_codes = [4]')
        + job("bad", 'command = ["sh", "-c", "exit 3"]')
        + job("missing", 'command = ["/no/such/binary"]')
        + job("shell", 'command = "echo $((1+2)) | cat"\nshell = true')
        + job("env", 'command = ["sh", "-c", "echo $FOO; pwd"]\nenv = {FOO = "bar"}\ncwd = "/"')
    )
    run, steps = run_to_end(r, "ok")
    assert run.status == "success" and run.output == "hello\noops\n"
    assert [s.name for s in steps] == ["sh"] and run.summary == '{"exit_code": 0}'
    assert run_to_end(r, "warn")[0].status == "warning"
    run, steps = run_to_end(r, "bad")
    assert run.status == "error" and run.error.endswith("exit code 3") and steps[0].error == "exit code 3"
    run, _ = run_to_end(r, "missing")
    assert run.status == "error" and "cannot start" in run.error
    assert run_to_end(r, "shell")[0].output == "3\n"
    assert run_to_end(r, "env")[0].output == "bar\n/\n"


def test_command_output_tail_is_bounded(runner):
    r = runner(job("big", 'command = ["sh", "-c", "yes 0123456789 | head -c 1000000; echo END"]'))
    run, _ = run_to_end(r, "big")
    assert run.status == "success"
    assert len(run.output.encode()) == 64 * 1024 and run.output.endswith("END\n")


def test_grandchild_holding_stdout_does_not_block(runner):
    r = runner(job("j", 'command = ["sh", "-c", "sleep 30 & echo started"]', timeout="10s"))
    t0 = time.monotonic()
    live = r.start(r.config.job("j"), "manual", time.time())
    assert live.ended.wait(5)
    assert time.monotonic() - t0 < 2
    run, _ = store.get_run(live.run_id)
    assert run.status == "success" and "started" in run.output
    pgid = live._process.pid
    wait_for(lambda: group_gone(pgid), 2, what="the leftover sleep to be killed")


def test_command_hanging_with_grandchild_ends_at_deadline(runner):
    r = runner(job("j", 'command = ["sh", "-c", "sleep 30 & sleep 30"]', timeout="1s"))
    live = r.start(r.config.job("j"), "manual", time.time())
    assert live.ended.wait(4)
    run, steps = store.get_run(live.run_id)
    assert run.status == "timeout" and run.duration_s < 1.5
    assert steps[0].status == "timeout"
    wait_for(lambda: group_gone(live._process.pid), 2, what="the process group to be gone")


def test_command_ignoring_sigterm_is_killed(runner):
    script = "trap '' TERM; sleep 30 & trap '' TERM; while :; do sleep 0.1; done"
    r = runner(job("j", f'command = ["sh", "-c", "{script}"]', timeout="0.5s"), abort_grace="1s")
    live = r.start(r.config.job("j"), "manual", time.time())
    assert live.ended.wait(8)
    run, _ = store.get_run(live.run_id)
    assert run.status == "timeout"
    assert 5.4 <= run.duration_s <= 6.5, run.duration_s  # deadline + 5 s to SIGKILL + a little
    wait_for(lambda: group_gone(live._process.pid), 2, what="the process group to be gone")


# -- declarative checks -------------------------------------------------------------------


def checks(*tables: str) -> str:
    return "".join(f"[[jobs.checks]]\n{t}\n" for t in tables)


def test_checks_pass_fail_and_warn(runner, http_server):
    u = http_server.url
    r = runner(
        job(
            "web",
            checks(
                f'name = "ok"\nurl = "{u}/ok"\ncontains = "all ok"',
                f'url = "{u}/json?x=1"\n'
                'expect_json = {"status" = "ok", "data.count" = 3, "data.items.1" = 2}',
                f'name = "five-hundred"\nurl = "{u}/500"',
                f'name = "expect-500"\nurl = "{u}/500"\nexpect_status = [500]',
                f'name = "latency"\nurl = "{u}/slow?0.3"\nmax_latency = "0.1s"',
                f'name = "wrong-json"\nurl = "{u}/json"\nexpect_json = {{"data.count" = 4}}',
            ),
            timeout="10s",
            min_success_rate=0.5,
        )
    )
    run, steps = run_to_end(r, "web")
    got = {s.name: (s.status, s.error) for s in steps}
    assert got["ok"] == ("success", None)
    assert got[f"{u}/json"] == ("success", None)  # default name: no query string
    assert got["five-hundred"] == ("error", "status 500, expected 2xx")
    assert got["expect-500"] == ("success", None)
    assert got["latency"][0] == "warning" and "max_latency" in got["latency"][1]
    assert got["wrong-json"] == ("error", "data.count = 3, expected 4")
    assert run.status == "warning"  # 4/6 >= 0.5
    assert run.summary == '{"checks": 6}'


def test_check_body_cap_and_secret_header(runner, http_server, monkeypatch):
    monkeypatch.setenv("API_TOKEN", "tok-abcdef-123")
    u = http_server.url
    r = runner(
        job(
            "web",
            checks(
                f'name = "big"\nurl = "{u}/big"',
                f'name = "auth"\nurl = "{u}/500"\nheaders = {{Authorization = "Bearer ${{API_TOKEN}}"}}',
            ),
            timeout="10s",
        )
        + '[jobs.http]\nmax_body = "1MB"\n'
    )
    run, steps = run_to_end(r, "web")
    assert steps[0].status == "error" and "max_body" in steps[0].error
    assert any(h.get("Authorization") == "Bearer tok-abcdef-123" for h in http_server.headers_seen)
    dump = "\n".join(str(row) for row in store.db.execute_sql("SELECT * FROM run").fetchall())
    assert "tok-abcdef" not in dump


def test_checks_after_abort_are_skipped(runner, http_server):
    u = http_server.url
    r = runner(
        job("web", checks(f'name = "a"\nurl = "{u}/hang"', f'name = "b"\nurl = "{u}/ok"'), timeout="0.5s")
    )
    run, steps = run_to_end(r, "web")
    assert run.status == "timeout"
    assert [(s.name, s.status) for s in steps] == [("a", "timeout"), ("b", "skipped")]
    assert http_server.count("/ok") == 0


def test_run_thread_is_daemon_and_named(runner):
    r = runner(job("j", 'run = "jobs:sleep_uncooperatively"\nparams = {seconds = 0.3}'))
    live = r.start(r.config.job("j"), "manual", time.time())
    assert live.thread.daemon and live.thread.name.startswith(f"run-{live.run_id}-j")
    assert live.ended.wait(3)
    assert threading.active_count() < 50


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
