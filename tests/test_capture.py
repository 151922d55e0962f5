"""A Python run's own output: ctx.log, print() and logging of its own thread (SPEC section 4)."""

from __future__ import annotations

import sys

from test_runner import job

from beaconlite import store
from beaconlite.capture import RunOutput


def test_each_run_keeps_its_own_print_logging_and_ctx_log(runner, capsys):
    r = runner(
        job("a", 'run = "jobs:chatty"\nparams = {tag = "alpha", sleep = 0.3}')
        + job("b", 'run = "jobs:chatty"\nparams = {tag = "bravo", sleep = 0.3, fail = true}')
    )
    a = r.start(r.config.job("a"), "manual", 1.0)
    b = r.start(r.config.job("b"), "manual", 1.0)  # the two run at the same time
    print("printed by the test itself")
    assert a.ended.wait(5) and b.ended.wait(5)
    alpha, _ = store.get_run(a.run_id)
    bravo, _ = store.get_run(b.run_id)
    assert alpha.output.splitlines() == [
        "printed by alpha",
        "INFO chatty: logged by alpha",
        "INFO ctx line by alpha",
    ]
    assert "bravo" not in alpha.output and "alpha" not in bravo.output
    lines = bravo.output.splitlines()
    assert lines[:3] == ["printed by bravo", "INFO chatty: logged by bravo", "INFO ctx line by bravo"]
    # then the traceback, the job's own frames first (not beaconlite's runner)
    assert lines[3] == "Traceback (most recent call last):" and "jobs.py" in lines[4], lines
    assert lines[-1] == "RuntimeError: bravo failed"
    assert "printed by the test itself" in capsys.readouterr().out  # other threads: untouched
    assert sys.stdout.__class__.__name__ == "_Router"


def test_the_kept_output_is_bounded_and_redacted_whole(runner, monkeypatch):
    monkeypatch.setenv("TOKEN", "s3cr3t-t0ken-value")
    r = runner(job("big", 'run = "jobs:chatty"\nparams = {tag = "${TOKEN}", lines = 20000}'))
    live = r.start(r.config.job("big"), "manual", 1.0)
    assert live.ended.wait(10)
    run, _ = store.get_run(live.run_id)
    assert len(run.output.encode()) <= 64 * 1024 and run.output.endswith("*** line 19999")
    assert "s3cr3t" not in run.output and "t0ken" not in run.output


def test_run_output_keeps_the_end_and_says_it_dropped_the_start():
    out = RunOutput(limit=10)
    out.write("0123456789")
    assert not out.dropped
    out.write("abcdefghijklmnopqrstu")
    assert out.dropped and out.text().endswith("qrstu") and len(out.text()) <= 20
