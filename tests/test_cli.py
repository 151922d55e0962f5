from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from beaconlite import store
from beaconlite.cli import cli as cli_group

RUN_KEYS = {
    "id",
    "job",
    "status",
    "trigger",
    "attempt",
    "scheduled_at",
    "started_at",
    "finished_at",
    "deadline_at",
    "duration_s",
    "error",
    "steps_total",
    "steps_ok",
    "slots",
    "last_slot_at",
}
STEP_KEYS = {"name", "status", "started_at", "finished_at", "duration_s", "error"}


@pytest.fixture
def history(tmp_db):
    """A small real history: a success with steps, an error, a skip and a live run."""
    now = time.time()
    ok = store.start_run("alpha", "schedule", now - 100, 1, now - 40, None, now - 99)
    for name, status in (("a", "success"), ("b", "warning"), ("c", "error")):
        store.finish_step(ok, store.start_step(ok, name, now - 98), status, None, now - 97)
    store.finish_run(ok, "warning", now - 96, summary='{"rows": 3}', output="hello\n", duration_s=3.0)
    bad = store.start_run("beta", "manual", now - 50, 1, now + 10, None, now - 50)
    store.finish_run(bad, "error", now - 49, error="ValueError: boom", duration_s=1.0)
    store.record_skipped("alpha", now - 30, "overlap: 1 run of alpha is live", now - 30)
    store.start_run("alpha", "schedule", now - 10, 1, now + 50, None, now - 10)
    store.close()
    return tmp_db


def test_every_command_has_help(cli):
    for name in cli_group.commands:
        result = cli(name, "--help")
        assert result.code == 0 and "Usage:" in result.out, name


def test_version(cli):
    from beaconlite import __version__

    result = cli("--version")
    assert result.code == 0 and __version__ in result.out


def test_runs_json_shape_and_order(cli, history):
    result = cli("runs", "--database", history, "--json")
    assert result.code == 0, result.err
    runs = result.json()
    assert [r["status"] for r in runs] == ["running", "skipped", "error", "warning"]
    assert all(set(r) == RUN_KEYS for r in runs)
    warning = runs[3]
    assert (warning["steps_total"], warning["steps_ok"], warning["duration_s"]) == (3, 2, 3.0)
    assert warning["scheduled_at"].endswith("Z") and len(warning["scheduled_at"]) == 24
    skipped = runs[1]
    assert skipped["started_at"] is None and skipped["duration_s"] is None
    assert skipped["finished_at"] is not None and "overlap" in skipped["error"]


def test_runs_filters(cli, history):
    def ids(*args):
        result = cli("--database", history, "runs", "--json", *args)
        assert result.code == 0, result.err
        return [(r["job"], r["status"]) for r in result.json()]

    assert ids("--job", "beta") == [("beta", "error")]
    assert ids("--status", "skipped") == [("alpha", "skipped")]
    assert ids("--limit", "1") == [("alpha", "running")]
    assert ids("--since", "35s") == [("alpha", "running"), ("alpha", "skipped")]


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "--limit", "-1"],
        ["runs", "--limit", "x"],
        ["runs", "--since", "5x"],
        ["runs", "--status", "bogus"],
        ["show", "abc"],
        ["prune", "--older-than", "x"],
        ["nonsense"],
    ],
)
def test_malformed_arguments_exit_2_one_line(cli, history, args):
    result = cli("--database", history, *args)
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert result.err.startswith("beaconlite: error: ")


def test_show_json_shape(cli, history):
    run_id = cli("runs", "--database", history, "--json", "--status", "warning").json()[0]["id"]
    result = cli("show", str(run_id), "--json", "--database", history)
    assert result.code == 0
    detail = result.json()
    assert set(detail) == RUN_KEYS | {"steps", "output", "summary"}
    assert [s["name"] for s in detail["steps"]] == ["a", "b", "c"]
    assert all(set(s) == STEP_KEYS for s in detail["steps"])
    assert detail["summary"] == {"rows": 3} and detail["output"] == "hello\n"


def test_show_text_and_unknown_id(cli, history):
    result = cli("--database", history, "show", "1")
    assert result.code == 0 and "alpha" in result.out and "warning" in result.out
    result = cli("--database", history, "show", "999")
    assert result.code == 1 and "no run with id 999" in result.err


def test_status_json_without_config(cli, history):
    store.open_writer(history)
    store.save_job_states(
        [{"name": "alpha", "schedule": "every 1m", "enabled": 1, "next_run_at": time.time() + 30}]
    )
    store.close()
    result = cli("status", "--json", "--database", history)
    assert result.code == 0, result.err
    value = result.json()
    assert set(value) == {"daemon", "jobs"}
    assert set(value["daemon"]) == {
        "state",
        "pid",
        "host",
        "version",
        "started_at",
        "heartbeat_at",
        "database",
    }
    assert value["daemon"]["database"] == str(history)
    assert value["daemon"]["state"] == "stopped"
    (alpha,) = value["jobs"]
    assert set(alpha) == {
        "name",
        "schedule",
        "enabled",
        "timezone",
        "next_run_at",
        "last_status",
        "last_finished_at",
        "live_runs",
        "last_skip_reason",
        "paused",
        "paused_at",
        "paused_by",
        "loaded",
    }
    assert alpha["paused"] is False and alpha["loaded"] is False  # no daemon runs it
    assert alpha["timezone"] == "local"  # published without one: the default
    assert alpha["last_status"] == "warning" and alpha["live_runs"] == 1
    assert alpha["next_run_at"] is None  # no daemon running: nothing will fire
    assert "overlap" in alpha["last_skip_reason"]


def test_status_states(cli, history):
    from beaconlite.lock import DaemonLock

    store.open_writer(history)
    lock = DaemonLock(history)
    assert lock.try_acquire()  # as a running daemon does
    now = time.time()
    instance = store.register_instance("daemon", 4242, "hostA", "0.1.0", 60.0, now)
    result = cli("status", "--json", "--database", history).json()
    assert result["daemon"]["state"] == "running" and result["daemon"]["pid"] == 4242
    store.open_writer(history)
    store.heartbeat(instance, [], now - 61)
    assert cli("status", "--json", "--database", history).json()["daemon"]["state"] == "stale"
    lock.release()  # the process died: its heartbeat is fresh, but nobody holds the lock
    store.open_writer(history)
    store.heartbeat(instance, [], time.time())
    assert cli("status", "--json", "--database", history).json()["daemon"]["state"] == "stopped"
    store.open_writer(history)
    store.stop_instance(instance, now)
    assert cli("status", "--json", "--database", history).json()["daemon"]["state"] == "stopped"


def test_status_with_config_lists_its_jobs(cli, make_config, tmp_path):
    path = make_config("""
        [[jobs]]
        name = "manual-only"
        run = "beaconlite.builtin:noop"
        [[jobs]]
        name = "hourly"
        schedule = "@hourly"
        command = ["true"]
    """)
    result = cli("-c", path, "status", "--json")
    assert result.code == 0, result.err
    jobs = result.json()["jobs"]
    assert [(j["name"], j["schedule"], j["next_run_at"]) for j in jobs] == [
        ("manual-only", None, None),
        ("hourly", "@hourly", None),
    ]
    assert not (tmp_path / "state").exists()  # a query never creates the database


def test_global_options_before_or_after(cli, history, tmp_path):
    before = cli("--database", history, "runs", "--json").json()
    after = cli("runs", "--json", "--database", history).json()
    assert before == after and len(before) == 4


def test_corrupt_database_exit_2(cli, tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 1000)
    for args in (["status"], ["runs"], ["show", "1"], ["prune", "--older-than", "1d"]):
        result = cli("--database", bad, *args)
        assert result.code == 2, args
        assert result.err.count("\n") == 1 and str(bad) in result.err


def test_missing_database_is_empty_history(cli, tmp_path):
    missing = tmp_path / "none" / "b.db"
    assert cli("--database", missing, "runs", "--json").json() == []
    assert cli("--database", missing, "status", "--json").json()["daemon"]["state"] == "stopped"
    assert not missing.parent.exists()


def test_prune_json(cli, history):
    result = cli("--database", history, "prune", "--older-than", "20s", "--dry-run", "--json")
    assert result.json() == {"dry_run": True, "pruned": 3}
    result = cli("--database", history, "prune", "--older-than", "20s", "--json")
    assert result.json() == {"dry_run": False, "pruned": 3}
    # Without --older-than: the config's keep_history (90 days by default), then 0 = keep all.
    assert cli("--database", history, "prune", "--json").json() == {"dry_run": False, "pruned": 0}
    assert [r["status"] for r in cli("--database", history, "runs", "--json").json()] == ["running"]


def test_check_config_lists_next_fires(cli, make_config):
    path = make_config("""
        [[jobs]]
        name = "tick"
        schedule = "every 10m"
        run = "beaconlite.builtin:noop"
    """)
    result = cli("-c", path, "check-config")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("tick"))
    fires = lines[first : first + 3]  # one line per fire time, in the job's zone with its offset
    assert all(re.search(r"\d\d:\d0:00 \S+ \([+-]\d\d:\d\d\)$", line) for line in fires), fires


def test_real_process_entry_points(history, tmp_path):
    """The console script and `python -m beaconlite`: exit codes and one-line errors."""
    out = subprocess.run(
        [sys.executable, "-m", "beaconlite", "--database", str(history), "runs", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and out.stdout.startswith("[")
    out = subprocess.run(
        [sys.executable, "-m", "beaconlite", "show", "nope"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


# What the daemon needs and a query never does: the scheduler, HTTP, the runs' machinery.
DAEMON_ONLY = (
    "apscheduler", "requests", "urllib3", "http.server", "beaconlite.daemon",
    "beaconlite.runner", "beaconlite.liverun", "beaconlite.alarms", "beaconlite.kinds",
    "beaconlite.http", "beaconlite.webserver", "beaconlite.notify", "beaconlite.loader",
)  # fmt: skip


@pytest.mark.parametrize("command", ["status", "runs", "health", "show 1"])
def test_query_commands_import_only_what_they_use(history, make_config, command):
    config = make_config(
        f'[daemon]\ndatabase = "{history}"\n[[jobs]]\nname = "a"\nschedule = "every 1m"\n'
        'run = "beaconlite.builtin:noop"\n'
    )
    code = (
        "import sys; from beaconlite.cli import main\n"
        "try: main(['-c', sys.argv[1], *sys.argv[2].split()])\n"
        "except SystemExit: pass\n"
        f"bad = [m for m in {DAEMON_ONLY!r} if m in sys.modules]\n"
        "print('heavy:' + ','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(config), command], capture_output=True, text=True, timeout=30
    )
    assert out.stdout.strip().splitlines()[-1] == "heavy:", out.stdout + out.stderr


def test_check_config_from_count_json_in_each_jobs_zone(make_config, cli):
    path = make_config(
        """
        [daemon]
        database = "state/b.db"
        timezone = "UTC"
        [[jobs]]
        name = "ny"
        schedule = "30 2 * * *"
        timezone = "America/New_York"
        run = "beaconlite.builtin:noop"
        [[jobs]]
        name = "by-hand"
        run = "beaconlite.builtin:noop"
        """
    )
    # --from without an offset is read in daemon.timezone (UTC here)
    result = cli("-c", path, "check-config", "--from", "2026-03-07T12:00", "--count", "2", "--json")
    assert result.code == 0, result.err
    value = result.json()
    assert set(value) == {"ok", "database", "jobs"} and value["ok"] is True
    ny, manual = value["jobs"]
    assert set(ny) == {"name", "kind", "schedule", "timezone", "next"}
    # 02:30 does not exist in New York on 2026-03-08: it fires right after the change
    assert ny["next"] == ["2026-03-08T07:00:00.000Z", "2026-03-09T06:30:00.000Z"]
    assert ny["timezone"] == "America/New_York" and manual["next"] == [] and manual["schedule"] is None
    text = cli("-c", path, "check-config", "--from", "2026-03-07", "--count", "3")
    assert "2026-03-08 03:00:00 EDT (-04:00)" in text.out and "2026-03-07 02:30:00 EST (-05:00)" in text.out
    assert "manual only" in text.out
    bad = cli("-c", path, "check-config", "--from", "yesterday")
    assert bad.code == 2 and "--from" in bad.err and bad.err.count("\n") == 1


# -- which database, times, and the smaller things (SPEC section 6) --------------------------


def test_with_no_config_a_query_says_which_database_it_reads(cli, tmp_path):
    result = cli("status")
    default = tmp_path / "home" / "state" / "beaconlite" / "beaconlite.db"
    assert result.code == 0
    assert "no config found (looked in " in result.err and f"reading {default}" in result.err
    assert result.err.count("\n") == 1
    assert f"no database yet at {default}" in result.out
    typo = cli("--database", tmp_path / "typo.db", "runs")
    assert typo.code == 0 and f"no database yet at {tmp_path / 'typo.db'}" in typo.out


def test_an_invalid_config_does_not_blind_the_queries(cli, make_config, history):
    path = make_config(f'[daemon]\ndatabase = "{history}"\nbogus = 1\n[[jobs]]\nname = "alpha"\n')
    result = cli("-c", path, "runs", "--json")
    assert result.code == 0 and len(result.json()) == 4
    assert 'unknown key "bogus"' in result.err and "reading its database anyway" in result.err
    assert result.err.count("\n") == 1
    assert cli("-c", path, "check-config").code == 2  # what runs jobs still refuses it
    bad_toml = make_config("[daemon\n", name="broken.toml")
    assert cli("-c", bad_toml, "status").code == 2


def test_times_for_people_are_in_the_daemon_zone_with_its_abbreviation(cli, make_config, history):
    path = make_config(f'[daemon]\ndatabase = "{history}"\ntimezone = "America/New_York"\n')
    out = cli("-c", path, "runs").out
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d E[SD]T", out), out
    shown = cli("-c", path, "show", "1").out
    assert re.search(r"started:\s+\S+ \S+ E[SD]T", shown), shown


@pytest.mark.parametrize("since", ["2w", "1d", "90m"])
def test_since_takes_durations(cli, history, since):
    assert len(cli("--database", history, "runs", "--json", "--since", since).json()) == 4


def test_since_takes_a_date(cli, history):
    today = time.strftime("%Y-%m-%d")
    assert len(cli("--database", history, "runs", "--json", "--since", today).json()) == 4
    assert cli("--database", history, "runs", "--json", "--since", "2999-01-01").json() == []
    bad = cli("--database", history, "runs", "--since", "yesterday-ish")
    assert bad.code == 2 and "--since" in bad.err


def test_runs_of_an_unknown_job_say_so(cli, history):
    out = cli("--database", history, "runs", "--job", "nosuch")
    assert out.code == 0 and "no job named 'nosuch'" in out.out


def test_health_text_shows_a_dash_for_no_value(cli, tmp_path):
    out = cli("--database", tmp_path / "none.db", "health")
    assert "daemon_heartbeat_age_s: -" in out.out and "None" not in out.out


def test_step_durations_are_rounded_to_milliseconds(cli, history):
    steps = cli("show", "1", "--json", "--database", history).json()["steps"]
    assert all(s["duration_s"] is None or round(s["duration_s"], 3) == s["duration_s"] for s in steps)


@pytest.mark.parametrize("database", ["nonexistent/dir/x.db", "/proc/beacon/x.db"])
def test_a_database_path_that_cannot_be_made_is_refused_naming_the_key(make_config, cli, database):
    path = make_config(
        f'[daemon]\ndatabase = "{database}"\n[[jobs]]\nname = "j"\nrun = "beaconlite.builtin:noop"\n'
    )
    result = cli("-c", path, "daemon")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert '[daemon]: key "database"' in result.err and "Traceback" not in result.err
    assert not (path.parent / "nonexistent").exists()  # no directory tree grown from a typo
