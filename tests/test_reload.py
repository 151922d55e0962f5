"""Reload (SPEC sections 5 and 8): config and job code re-read off the tick, bounded; fresh
modules for edited local code; live runs keep the code they started with."""

from __future__ import annotations

import json
import os
import py_compile
import signal
import time

import pytest
from conftest import wait_for
from test_daemon import cli

from beaconlite import timing

MODULE = """
import os
import time

import helper


def quick(ctx):
    return {"version": 1, "helper": helper.VALUE}


def slow(ctx):
    while not os.path.exists(ctx.params["go"]):
        time.sleep(0.02)
        ctx.checkpoint()
    return {"version": 1}
"""

JOBS = """
[[jobs]]
name = "quick"
run = "localjobs:quick"
[[jobs]]
name = "slow"
run = "localjobs:slow"
params = {go = "%s"}
timeout = "30s"
"""


def summary(d, run_id: int) -> dict:
    return json.loads(next(r for r in d.runs() if r.id == run_id).summary)


def trigger(d, job: str) -> int:
    out = cli("-c", d.config, "trigger", job, "--wait", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)["id"]


def test_reload_runs_edited_code_while_a_live_run_keeps_the_old(daemon, tmp_path):
    (tmp_path / "localjobs.py").write_text(MODULE)
    (tmp_path / "helper.py").write_text("VALUE = 'a'\n")
    d = daemon(JOBS % (tmp_path / "go"))
    assert summary(d, trigger(d, "quick")) == {"version": 1, "helper": "a"}
    out = cli("-c", d.config, "trigger", "slow")
    assert out.returncode == 0, out.stderr
    slow_id = int(out.stdout.split()[1])
    # An edit of the same length within the same second (CPython's .pyc check, by whole-
    # second mtime and size, would take the old code), a new module and a job for it.
    source = tmp_path / "localjobs.py"
    before = source.stat()
    py_compile.compile(str(source), invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)  # the trap
    source.write_text(MODULE.replace('"version": 1, "helper"', '"version": 2, "helper"'))
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert source.stat().st_size == before.st_size
    (tmp_path / "extras.py").write_text("def extra(ctx):\n    return {'extra': True}\n")
    d.config.write_text(d.config.read_text() + '[[jobs]]\nname = "extra"\nrun = "extras:extra"\n')
    out = cli("-c", d.config, "reload")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("reloaded: 1 added, 2 changed, 1 module re-imported"), out.stdout
    assert "re-imported: localjobs" in out.stdout
    assert summary(d, trigger(d, "quick")) == {"version": 2, "helper": "a"}
    assert summary(d, trigger(d, "extra")) == {"extra": True}
    (tmp_path / "go").touch()
    wait_for(lambda: any(r.id == slow_id and r.status == "success" for r in d.runs()), 5, what="the slow run")
    assert summary(d, slow_id) == {"version": 1}  # it started under the old code
    # A helper module edited alone: it, and the module that uses it, are imported afresh.
    (tmp_path / "helper.py").write_text("VALUE = 'b'\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: d.count("daemon.reload") >= 2, 5, what="the SIGHUP reload")
    assert (
        "2 changed, 2 modules re-imported (changed: quick, slow; re-imported: helper, localjobs)" in d.log()
    )
    assert summary(d, trigger(d, "quick")) == {"version": 2, "helper": "b"}
    status = json.loads(cli("-c", d.config, "status", "--json").stdout)
    assert all(j["loaded"] for j in status["jobs"])
    assert d.stop() == 0


def test_a_refused_reload_keeps_the_running_config_whole(daemon, tmp_path):
    (tmp_path / "localjobs.py").write_text(MODULE)
    (tmp_path / "helper.py").write_text("VALUE = 'a'\n")
    d = daemon(JOBS % (tmp_path / "go"))
    good = d.config.read_text()
    # a module whose import raises SystemExit (a BaseException): refused, the daemon lives
    (tmp_path / "broken.py").write_text("raise SystemExit(3)\n")
    d.config.write_text(good + '[[jobs]]\nname = "new"\nrun = "broken:fn"\n')
    out = cli("-c", d.config, "reload")
    assert out.returncode == 1 and "reload refused" in out.stderr and "SystemExit" in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    status = json.loads(cli("-c", d.config, "status", "--json").stdout)
    assert {j["name"]: j["loaded"] for j in status["jobs"]} == {"quick": True, "slow": True, "new": False}
    text = cli("-c", d.config, "status").stdout
    assert "new (not loaded by the daemon)" in text
    # check-config says the same in one line
    out = cli("-c", d.config, "check-config")
    assert out.returncode == 2 and "SystemExit" in out.stderr and out.stderr.count("\n") == 1
    # a config that is valid TOML but not valid: refused, and queries still read the history
    d.config.write_text(good + "\n[http]\nbogus = 1\n")
    out = cli("-c", d.config, "reload")
    assert out.returncode == 1 and 'unknown key "bogus"' in out.stderr
    out = cli("-c", d.config, "status")
    assert out.returncode == 0 and "warning" in out.stderr and "reading its database anyway" in out.stderr
    assert f"database: {d.database}" in out.stdout and "quick" in out.stdout
    assert d.proc.poll() is None and trigger(d, "quick")  # the running config is intact
    assert d.stop() == 0


def test_an_import_that_blocks_never_wedges_the_tick(inproc_daemon, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(timing, "IMPORT_TIMEOUT", 1.0)
    (tmp_path / "sleepy.py").write_text("import time\ntime.sleep(30)\ndef fn(ctx):\n    pass\n")
    d = inproc_daemon('[[jobs]]\nname = "tick"\nschedule = "every 1s"\nrun = "beaconlite.builtin:noop"\n')
    d.config.path.write_text(d.config.path.read_text() + '[[jobs]]\nname = "new"\nrun = "sleepy:fn"\n')
    heartbeats = []
    beat = d._heartbeats
    d._heartbeats = lambda tick: (heartbeats.append(time.monotonic()), beat(tick))
    d.request_reload()
    wait_for(lambda: "took longer than 1s" in caplog.text, 4, what="the refusal")
    t0 = time.monotonic()
    wait_for(lambda: len([h for h in heartbeats if h > t0]) >= 3, 3, what="heartbeats after the refusal")
    assert [j.name for j in d.config.jobs] == ["tick"]
    # the import finishes one day: its result is never used
    with pytest.raises(AssertionError):
        wait_for(lambda: "new" in [j.name for j in d.config.jobs], 1.5, what="never")


def test_reload_without_a_daemon_is_a_negative_answer(make_config):
    path = make_config('[[jobs]]\nname = "j"\nrun = "beaconlite.builtin:noop"\n')
    out = cli("-c", path, "reload")
    assert out.returncode == 1 and "no daemon is running" in out.stderr


def test_daemon_start_refuses_a_blocking_or_raising_import(make_config, tmp_path):
    (tmp_path / "exits.py").write_text("raise KeyboardInterrupt\n")
    path = make_config('[[jobs]]\nname = "j"\nrun = "exits:fn"\n')
    out = cli("-c", path, "daemon", timeout=20)
    assert out.returncode == 2 and "KeyboardInterrupt" in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1


def test_status_marks_a_job_the_daemon_has_differently(daemon):
    d = daemon('[[jobs]]\nname = "a"\nrun = "beaconlite.builtin:noop"\ntimeout = "5s"\n')
    d.config.write_text(d.config.read_text().replace('timeout = "5s"', 'timeout = "6s"'))
    jobs = json.loads(cli("-c", d.config, "status", "--json").stdout)["jobs"]
    assert jobs[0]["loaded"] is False  # changed in the file, not reloaded
    assert cli("-c", d.config, "reload").returncode == 0
    jobs = json.loads(cli("-c", d.config, "status", "--json").stdout)["jobs"]
    assert jobs[0]["loaded"] is True
    assert d.stop() == 0
