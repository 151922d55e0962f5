"""The three job kinds through a real runner: commands (real processes) and HTTP checks
(a real local server). Python runs are in test_runner.py."""

from __future__ import annotations

import os
import time

from conftest import wait_for
from test_runner import job, run_to_end

from beaconlite import store, timing


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
    assert steps[0].status == "timeout" and "while waiting for the command (pid" in steps[0].error
    wait_for(lambda: group_gone(live._process.pid), 2, what="the process group to be gone")


def test_command_ignoring_sigterm_is_killed(runner, monkeypatch):
    monkeypatch.setattr(timing, "KILL_AFTER", 1.0)  # the contract's 5 s, shortened
    script = "trap '' TERM; sleep 30 & trap '' TERM; while :; do sleep 0.1; done"
    r = runner(job("j", f'command = ["sh", "-c", "{script}"]', timeout="0.5s"), abort_grace="1s")
    live = r.start(r.config.job("j"), "manual", time.time())
    assert live.ended.wait(8)
    run, _ = store.get_run(live.run_id)
    assert run.status == "timeout"
    assert 1.4 <= run.duration_s <= 2.3, run.duration_s  # deadline + KILL_AFTER to SIGKILL + a little
    wait_for(lambda: group_gone(live._process.pid), 2, what="the process group to be gone")


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
    # the step in flight says what it was waiting for
    assert steps[0].error == f"deadline of 500ms passed while waiting for GET {u}/hang"
    assert http_server.count("/ok") == 0


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def checks(*tables: str) -> str:
    return "".join(f"[[jobs.checks]]\n{t}\n" for t in tables)


def test_a_refused_connection_is_said_in_words_of_its_cause(runner):
    r = runner(job("down", checks('name = "a"\nurl = "http://127.0.0.1:9/x"')))
    run, steps = run_to_end(r, "down")
    assert run.status == "error"
    assert steps[0].error.startswith("ConnectionError: GET http://127.0.0.1:9/x: ")
    assert "Connection refused" in steps[0].error
    assert "object at 0x" not in steps[0].error and "Tracked" not in steps[0].error
