"""`beaconlite run JOB` as a real process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from conftest import subprocess_env, wait_for

from beaconlite import store


def beaconlite(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "beaconlite", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        **kw,
    )


CONFIG = """
[daemon]
database = "state/b.db"
log_format = "json"
heartbeat_interval = "0.2s"
[[jobs]]
name = "ok"
run = "beaconlite.builtin:selfcheck"
[[jobs]]
name = "fails"
run = "jobs:raise_error"
[[jobs]]
name = "slow"
command = ["sleep", "30"]
"""


def test_run_records_and_exits_by_status(make_config, tmp_path):
    path = make_config(CONFIG)
    out, err = beaconlite("-c", path, "run", "ok", "--json").communicate(timeout=30)
    detail = json.loads(out)
    assert detail["status"] == "success" and detail["trigger"] == "manual"
    assert detail["steps_total"] == 3 == detail["steps_ok"]
    lines = [json.loads(line) for line in err.splitlines() if '"event"' in line]
    assert [e["event"] for e in lines] == ["run.start", "run.finish"]
    finish = lines[1]
    assert finish["job"] == "ok" and finish["run_id"] == detail["id"]
    assert finish["status"] == "success" and isinstance(finish["duration_s"], float)
    assert finish["ts"].endswith("Z") and finish["level"] == "info"
    proc = beaconlite("-c", path, "run", "fails")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "error" in out
    store.open_reader(tmp_path / "state" / "b.db")
    (instance_kinds,) = ({i.kind for i in store.Instance.select()},)
    assert instance_kinds == {"foreground"}
    assert all(i.stopped_at is not None for i in store.Instance.select())


def test_unknown_job_exit_2(make_config):
    proc = beaconlite("-c", make_config(CONFIG), "run", "nope")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and err.count("\n") == 1 and "no job named 'nope'" in err


def test_ctrl_c_cancels_cleanly(make_config, tmp_path):
    path = make_config(CONFIG)
    proc = beaconlite("-c", path, "run", "slow")
    db = tmp_path / "state" / "b.db"

    def live():
        if not db.exists():
            return False
        store.open_reader(db)
        return store.live_runs()

    runs = wait_for(live, 10, what="the run to start")
    # the foreground instance heartbeats while it runs
    beat0 = store.Instance.get_by_id(runs[0].instance_id).heartbeat_at
    wait_for(
        lambda: store.Instance.get_by_id(runs[0].instance_id).heartbeat_at > beat0, 3, what="a heartbeat"
    )
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 1 and time.monotonic() - t0 < 2
    assert "cancelled" in out
    assert store.run_status(runs[0].id) == "cancelled"
