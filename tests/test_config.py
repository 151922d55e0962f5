from __future__ import annotations

import pytest

from beaconlite import __version__
from beaconlite.config import (
    Check,
    DaemonSettings,
    HttpSettings,
    JobSpec,
    load_config,
)
from beaconlite.places import find_config

MINIMAL_JOB = """
[[jobs]]
name = "j"
run = "beaconlite.builtin:noop"
"""


def test_defaults_of_every_key(make_config, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    config = load_config(make_config(MINIMAL_JOB, database=False))
    d = config.daemon
    assert d.database == tmp_path / "xdg" / "beaconlite" / "beaconlite.db"
    assert d.python_path == ()
    assert (d.timezone, d.log_level, d.log_format) == ("local", "info", "auto")
    assert d.default_timeout == 1800 and d.heartbeat_interval == 5
    assert d.reaper_interval == 60 and d.orphan_after == 120 and d.abort_grace == 10
    assert d.max_concurrent_runs == 8 and d.on_stop == "cancel"
    assert d.keep_history == 90 * 86400 and d.group_access is False
    assert config.http == HttpSettings(10.0, 300.0, 50_000_000, f"beaconlite/{__version__}")
    job = config.jobs[0]
    assert (job.schedule, job.timeout, job.enabled) == (None, 1800.0, True)
    assert (job.max_instances, job.overlap, job.misfire_grace, job.catch_up) == (1, "skip", 300, True)
    assert (job.min_success_rate, job.retries, job.retry_delay, job.retry_on) == (1.0, 0, 60, ("error",))
    assert job.kind == "python" and job.params == {}
    assert config.notify == ()


def test_every_key_parsed(make_config, tmp_path, monkeypatch):
    monkeypatch.setenv("TOKEN", "s3cret")
    path = make_config(
        """
        [daemon]
        database = "data/b.db"
        python_path = ["lib"]
        timezone = "Europe/Berlin"
        log_level = "debug"
        log_format = "json"
        default_timeout = "1h30m"
        heartbeat_interval = "250ms"
        reaper_interval = 30
        orphan_after = "2m"
        abort_grace = "1.5s"
        max_concurrent_runs = 3
        on_stop = "finish"
        keep_history = "0"
        group_access = true

        [http]
        connect_timeout = "2s"
        read_timeout = "1m"
        max_body = "50MiB"
        user_agent = "me"

        [[jobs]]
        name = "py.job-1"
        schedule = "*/15 * * * *"
        enabled = false
        max_instances = 2
        overlap = "queue"
        misfire_grace = "10s"
        catch_up = false
        min_success_rate = 0.5
        retries = 3
        retry_delay = "5s"
        retry_on = ["error", "timeout"]
        run = "mod:fn"
        params = {tables = ["a", "b"]}
        [jobs.http]
        read_timeout = "5s"

        [[jobs]]
        name = "cmd"
        schedule = "every 10m"
        timezone = "America/New_York"
        timeout = "30s"
        command = ["/bin/echo", "hi"]
        env = {A = "1"}
        cwd = "/tmp"
        ok_exit_codes = [0, 3]
        warning_exit_codes = [4]

        [[jobs]]
        name = "sh"
        schedule = "@hourly"
        command = "echo hi | wc -c"
        shell = true

        [[jobs]]
        name = "web"
        [[jobs.checks]]
        name = "health"
        url = "https://api.example.com/health?x=1"
        method = "post"
        headers = {Authorization = "Bearer ${TOKEN}"}
        json = {a = 1}
        expect_status = [200, 204]
        contains = "ok"
        expect_json = {"status" = "ok", "data.count" = 3}
        max_latency = "2s"
        [[jobs.checks]]
        url = "https://user:pw@api.example.com/ping?token=x"
        body = "hello"
        expect_status = 201

        [[notify]]
        url = "https://hooks.example.com/x"
        on = ["error", "recovered"]
        jobs = ["web", "py.*"]
        [[notify]]
        command = ["/usr/bin/logger"]
    """,
        database=False,
    )
    c = load_config(path)
    assert c.daemon == DaemonSettings(
        database=tmp_path / "data" / "b.db",
        python_path=(str(tmp_path / "lib"),),
        timezone="Europe/Berlin",
        log_level="debug",
        log_format="json",
        default_timeout=5400,
        heartbeat_interval=0.25,
        reaper_interval=30,
        orphan_after=120,
        abort_grace=1.5,
        max_concurrent_runs=3,
        on_stop="finish",
        keep_history=0,
        group_access=True,
    )
    assert c.http == HttpSettings(2, 60, 50 * 2**20, "me")
    py, cmd, sh, web = c.jobs
    assert py == JobSpec(
        name="py.job-1",
        kind="python",
        schedule="*/15 * * * *",
        timezone="Europe/Berlin",  # the daemon's: the job names none
        timeout=5400,
        enabled=False,
        max_instances=2,
        overlap="queue",
        misfire_grace=10,
        catch_up=False,
        min_success_rate=0.5,
        retries=3,
        retry_delay=5,
        retry_on=("error", "timeout"),
        run="mod:fn",
        params={"tables": ["a", "b"]},
        http=HttpSettings(2, 5, 50 * 2**20, "me"),
    )
    assert cmd.kind == "command" and cmd.command == ("/bin/echo", "hi") and cmd.timeout == 30
    assert cmd.timezone == "America/New_York"
    assert cmd.env == {"A": "1"} and cmd.cwd == "/tmp"
    assert cmd.ok_exit_codes == (0, 3) and cmd.warning_exit_codes == (4,)
    assert sh.shell is True and sh.command == "echo hi | wc -c"
    assert web.kind == "checks"
    assert web.checks[0] == Check(
        name="health",
        url="https://api.example.com/health?x=1",
        method="POST",
        headers={"Authorization": "Bearer s3cret"},
        json={"a": 1},
        expect_status=(200, 204),
        contains="ok",
        expect_json={"status": "ok", "data.count": 3},
        max_latency=2.0,
    )
    # default name: the URL without its query string, and never its credentials
    assert web.checks[1].name == "https://api.example.com/ping"
    assert web.checks[1].expect_status == (201,) and web.checks[1].body == "hello"
    assert c.notify[0].on == ("error", "recovered") and c.notify[0].jobs == ("web", "py.*")
    assert c.notify[1].command == ("/usr/bin/logger",) and c.notify[1].jobs == ("*",)
    assert c.secrets == frozenset({"s3cret"})


BAD = [
    # (config body, substrings the one error line must contain)
    ("[daemon\n", ["invalid TOML", "line 1", "column"]),
    (
        "[daemon]\nheartbeat_intervall = '5s'\n",
        ['unknown key "heartbeat_intervall"', 'did you mean "heartbeat_interval"'],
    ),
    ("[deamon]\n", ['unknown section "deamon"', 'did you mean "daemon"']),
    # a path or a name that could become syntax in a unit file (SPEC sections 2 and 9)
    (
        '[daemon]\ndatabase = "/var/lib/bl\\nExecStartPre=+/bin/sh\\nX=/b.db"\n',
        ["[daemon]", "database", "control"],
    ),
    ('[daemon]\npython_path = ["ok", "a\\tb"]\n', ["python_path", "control character"]),
    ('[[jobs]]\nname = "j"\ncommand = ["true"]\ncwd = "/tmp\\r"\n', ['job "j"', "cwd", "control"]),
    (
        '[[jobs]]\nname = "j"\n[[jobs.checks]]\nname = "a\\u2028b"\nurl = "http://x/"\n',
        ["checks[0]", "name", "control"],
    ),
    ("[daemon]\nmax_concurrent_runs = '8'\n", ["[daemon]", "max_concurrent_runs", "integer"]),
    ("[daemon]\nmax_concurrent_runs = 0\n", ["max_concurrent_runs", "out of range"]),
    (MINIMAL_JOB + 'timezone = "Mars/Olympus_Mons"\n', ['job "j"', '"timezone"', "unknown time zone"]),
    ("[daemon]\nmax_concurrent_runs = 10001\n", ["max_concurrent_runs", "out of range"]),
    ("[daemon]\nheartbeat_interval = '0s'\n", ["heartbeat_interval", "> 0"]),
    ("[daemon]\nabort_grace = '400d'\n", ["abort_grace", "365 days"]),
    ("[daemon]\ntimezone = 'Mars/Base'\n", ["timezone", "unknown time zone"]),
    ("[daemon]\non_stop = 'wait'\n", ["on_stop", "'cancel'"]),
    ("[http]\nmax_body = '50 parsecs'\n", ["[http]", "max_body", "bad size"]),
    (MINIMAL_JOB + "timeout = '5x'\n", ['job "j"', "timeout", "bad duration"]),
    (MINIMAL_JOB + "max_instances = 0\n", ['job "j"', "max_instances", "out of range"]),
    (MINIMAL_JOB + "retries = 101\n", ['job "j"', "retries", "out of range"]),
    (MINIMAL_JOB + "min_success_rate = 1.5\n", ['job "j"', "min_success_rate"]),
    (MINIMAL_JOB + "overlap = 'pile'\n", ['job "j"', "overlap"]),
    (MINIMAL_JOB + "retry_on = ['success']\n", ['job "j"', "retry_on"]),
    (MINIMAL_JOB + "schedule = '61 * * * *'\n", ['job "j"', "schedule", "out of range"]),
    (MINIMAL_JOB + "schedule = '* * *'\n", ['job "j"', "schedule", "5 fields"]),
    (MINIMAL_JOB + "schedule = '0 0 31 2 *'\n", ['job "j"', "schedule", "never fires"]),
    (MINIMAL_JOB + "schedule = 'every 0s'\n", ['job "j"', "schedule", "at least 100ms"]),
    (MINIMAL_JOB + "schedule = '@fortnightly'\n", ['job "j"', "schedule", "unknown shorthand"]),
    (MINIMAL_JOB + "shedule = '@hourly'\n", ['job "j"', '"shedule"', 'did you mean "schedule"']),
    (MINIMAL_JOB + MINIMAL_JOB, ['job "j"', "duplicate job name"]),
    ("[[jobs]]\nname = 'x'\n", ['job "x"', 'exactly one of "run", "command" or "checks"']),
    ("[[jobs]]\nname = 'x'\nrun = 'a:b'\ncommand = ['true']\n", ['job "x"', "exactly one", "has"]),
    ("[[jobs]]\nname = 'bad name'\nrun = 'a:b'\n", ['job "bad name"', "name"]),
    ("[[jobs]]\nrun = 'a:b'\n", ["jobs[0]", '"name" is missing']),
    ("[[jobs]]\nname = 'x'\nrun = 'nocolon'\n", ['job "x"', "run", "module.path:function"]),
    ("[[jobs]]\nname = 'x'\ncommand = 'ls'\n", ['job "x"', "command", "argv"]),
    ("[[jobs]]\nname = 'x'\nrun = 'a:b'\ncwd = '/'\n", ['job "x"', '"cwd" only applies to command']),
    ("[[jobs]]\nname = 'x'\n[[jobs.checks]]\nurl = 'ftp://x'\n", ['job "x" checks[0]', "http(s) URL"]),
    (
        "[[jobs]]\nname = 'x'\n[[jobs.checks]]\nurl = 'http://x'\nexpect_status = 999\n",
        ['job "x" checks[0]', "expect_status"],
    ),
    (
        "[[jobs]]\nname = 'x'\n[[jobs.checks]]\nurl = 'http://x'\nbody = 'a'\njson = 1\n",
        ['job "x" checks[0]', "exclude"],
    ),
    (
        MINIMAL_JOB + "params = {t = '${BEACONLITE_UNSET_VAR}'}\n",
        ['job "j"', "BEACONLITE_UNSET_VAR is not set"],
    ),
    ("[[notify]]\non = ['error']\n", ["[[notify]] #1", '"url" or "command"']),
    ("[[notify]]\nurl = 'http://x'\non = ['exploded']\n", ["[[notify]] #1", "on"]),
]


@pytest.mark.parametrize("body,expected", BAD)
def test_bad_config_is_one_line_exit_2(body, expected, make_config, cli):
    path = make_config(body, database=False)
    result = cli("--config", path, "check-config")
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("beaconlite: error: ")
    assert str(path) in lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert "Traceback" not in result.err


def test_unimportable_run_target(make_config, cli):
    path = make_config("[[jobs]]\nname = 'x'\nrun = 'no_such_module_xyz:scan'\n")
    result = cli("-c", path, "check-config")
    assert result.code == 2
    assert 'job "x": key "run": cannot import' in result.err and "no_such_module_xyz" in result.err


def test_run_target_found_in_config_dir_and_python_path(make_config, tmp_path, cli):
    (tmp_path / "mine.py").write_text("def scan(ctx):\n    pass\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "other_mod_xyz.py").write_text("def scan(ctx):\n    pass\n")
    path = make_config(
        """
        [daemon]
        python_path = ["lib"]
        [[jobs]]
        name = "a"
        run = "mine:scan"
        [[jobs]]
        name = "b"
        run = "other_mod_xyz:scan"
    """,
        database=False,
    )
    result = cli("-c", path, "check-config")
    assert result.code == 0, result.err


def test_missing_config_file(cli, tmp_path):
    result = cli("-c", tmp_path / "nope.toml", "check-config")
    assert result.code == 2 and "config file not found" in result.err


def test_config_search_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config(None) is None
    home = tmp_path / "home" / ".config" / "beaconlite"
    home.mkdir(parents=True)
    (home / "config.toml").write_text("")
    assert find_config(None) == home / "config.toml"
    (tmp_path / "beaconlite.toml").write_text("")
    assert find_config(None).resolve() == (tmp_path / "beaconlite.toml").resolve()
    monkeypatch.setenv("BEACONLITE_CONFIG", "/x/env.toml")
    assert str(find_config(None)) == "/x/env.toml"
    assert str(find_config("/x/explicit.toml")) == "/x/explicit.toml"


def test_queries_do_not_need_the_secrets(make_config, cli):
    """An administrator's shell lacks the service's ${VAR}s: queries work, running refuses."""
    path = make_config(MINIMAL_JOB + "params = {t = '${BEACONLITE_UNSET_VAR}'}\n")
    assert cli("-c", path, "status", "--json").code == 0
    assert cli("-c", path, "runs").code == 0
    result = cli("-c", path, "check-config")
    assert result.code == 2 and "BEACONLITE_UNSET_VAR is not set" in result.err


def test_daemon_paths_from_the_environment_are_not_secrets(make_config, monkeypatch):
    """${STATE_DIRECTORY}/b.db must stay usable in a unit file; the same value elsewhere is."""
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/beaconlite")
    monkeypatch.setenv("TOKEN", "t0ken-value")
    path = make_config(
        '[daemon]\ndatabase = "${STATE_DIRECTORY}/b.db"\npython_path = ["${STATE_DIRECTORY}/jobs"]\n'
        '[[jobs]]\nname = "j"\ncommand = ["echo", "${TOKEN}"]\n'
    )
    c = load_config(path)
    assert str(c.daemon.database) == "/var/lib/beaconlite/b.db"
    assert c.secrets == frozenset({"t0ken-value"})
