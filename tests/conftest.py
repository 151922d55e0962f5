"""Shared fixtures: temporary databases and configs, the CLI in-process, local HTTP servers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from beaconlite import clock, loader, store
from beaconlite.cli import main
from beaconlite.config import load_config
from beaconlite.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/jobs.py: run targets


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02, what: str = "condition"):
    """Poll until predicate() is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def tmp_db(tmp_path) -> Path:
    """A fresh, migrated database file, open in this process."""
    path = tmp_path / "state" / "beaconlite.db"
    store.open_writer(path)
    yield path
    store.close()


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server of the test session's own (skips with the reason when none can run)."""
    import postgres

    reason = postgres.why_unavailable()
    if reason:
        pytest.skip(f"PostgreSQL tests: {reason}")
    server = postgres.Server()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh, empty PostgreSQL database."""
    return pg_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request, tmp_path):
    """A fresh, migrated store on each backend, open in this process; its location."""
    from beaconlite.places import PostgresURL

    if request.param == "sqlite":
        location = tmp_path / "state" / "beaconlite.db"
    else:
        location = PostgresURL(request.getfixturevalue("pg_url"))
    store.open_writer(location)
    yield location
    store.close()


@pytest.fixture
def make_config(tmp_path):
    """Write a config (dedented TOML) next to a temporary database; return its path."""

    def make(body: str = "", name: str = "beaconlite.toml", database: bool = True) -> Path:
        text = textwrap.dedent(body)
        if database and "[daemon]" not in text:
            text = '[daemon]\ndatabase = "state/beaconlite.db"\n' + text
        path = tmp_path / name
        path.write_text(text)
        return path

    return make


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def json(self):
        import json

        return json.loads(self.out)


@pytest.fixture
def cli(capsys):
    """Run `beaconlite ARGS` in-process through main(): exit code, stdout, stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No test reads the developer's own config or state directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "home" / "state"))
    monkeypatch.delenv("BEACONLITE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    store.close()


def subprocess_env(**extra) -> dict:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    return env


# -- a real local HTTP server with misbehaving routes (tests/peers.py) -------------------


@pytest.fixture
def http_server():
    from peers import start_peer, stop_peer

    server = start_peer()
    yield server
    stop_peer(server)


# -- a real daemon process ----------------------------------------------------------------


class DaemonProcess:
    def __init__(self, config: Path, database: Path, log: Path, env: dict):
        self.config, self.database, self.log_path = config, database, log
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self, wait_ready: bool = True) -> DaemonProcess:
        starts = self.count("daemon.start")
        self.log_file = open(self.log_path, "a")  # noqa: SIM115 - closed by stop() / kill9()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "beaconlite", "-c", str(self.config), "daemon"],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        if wait_ready:
            wait_for(
                lambda: self.count("daemon.start") > starts or self.proc.poll() is not None,
                15,
                what="the daemon to start",
            )
            assert self.proc.poll() is None, self.log()
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def events(self) -> list[dict]:
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def count(self, event: str) -> int:
        found = sum(1 for e in self.events() if e.get("event") == event)
        if event == "daemon.start":  # also with log_format = "text"
            found += sum(
                1 for line in self.log().splitlines() if not line.startswith("{") and " started: pid " in line
            )
        return found

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()
        return self.proc.returncode

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log_file.close()

    def runs(self, job: str | None = None) -> list:
        store.open_reader(self.database)
        query = store.Run.select().order_by(store.Run.id)
        if job:
            query = query.where(store.Run.job == job)
        rows = list(query)
        store.close()
        return rows


DAEMON_DEFAULTS = """
[daemon]
database = "state/b.db"
log_format = "json"
log_level = "debug"
heartbeat_interval = "0.2s"
reaper_interval = "0.5s"
orphan_after = "2s"
abort_grace = "0.5s"
"""


@pytest.fixture
def daemon(tmp_path):
    """daemon(jobs_toml, **env) -> a started DaemonProcess (stopped at teardown)."""
    made: list[DaemonProcess] = []

    def make(body: str, start: bool = True, defaults: str = DAEMON_DEFAULTS, **env) -> DaemonProcess:
        config = tmp_path / "beaconlite.toml"
        config.write_text(defaults + textwrap.dedent(body))
        d = DaemonProcess(
            config, tmp_path / "state" / "b.db", tmp_path / f"daemon{len(made)}.log", subprocess_env(**env)
        )
        made.append(d)
        return d.start() if start else d

    yield make
    for d in made:
        if d.proc and d.proc.poll() is None:
            d.stop()


# -- a daemon in this process (for tests that reach one of its duties) ----------------------


@pytest.fixture
def inproc_daemon(tmp_path, monkeypatch):
    """inproc_daemon(jobs_toml, **env) -> a started Daemon running on a thread of this process.

    Its exit code is in ``.result["code"]`` once ``.thread`` has ended. Do not use the CLI
    in-process meanwhile: the store's connection is per process.
    """
    from beaconlite.daemon import Daemon

    made = []

    def make(body: str, defaults: str = DAEMON_DEFAULTS, **env) -> Daemon:
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))
        path = tmp_path / "beaconlite.toml"
        path.write_text(defaults + textwrap.dedent(body))
        d = Daemon(load_config(path))
        d.result = {}
        d.thread = threading.Thread(
            target=lambda: d.result.setdefault("code", d.run(handle_signals=False)), daemon=True
        )
        d.thread.start()
        wait_for(
            # Started: scheduling, and the job list published (the start's last write, so a
            # fault a test injects next meets the running daemon, not its start).
            lambda: (
                (d.scheduler is not None and d.scheduler.running() and d._published is not None)
                or not d.thread.is_alive()
            ),
            10,
            what="the in-process daemon to start",
        )
        assert d.thread.is_alive(), "the in-process daemon did not start"
        made.append(d)
        return d

    yield make
    for d in made:
        d.request_stop()
        d.thread.join(20)


# -- a runner in this process -------------------------------------------------------------


@pytest.fixture
def runner(make_config, tmp_path):
    """make(toml) -> a Runner over a fresh database, for the jobs in that config."""
    made = []

    def make(body: str, **daemon) -> Runner:
        extra = "".join(f"{k} = {v!r}\n" for k, v in {"abort_grace": "0.5s", **daemon}.items())
        path = make_config(f'[daemon]\ndatabase = "state/b.db"\n{extra}' + body)
        config = load_config(path)
        store.open_writer(config.daemon.database)
        instance = store.register_instance("daemon", os.getpid(), "test", "t", 60, clock.wall())
        r = Runner(config, loader.load(config), instance)
        made.append(r)
        return r

    yield make
    for r in made:
        r.abort_all("test over")


# -- faults: the database refusing writes -------------------------------------------------

# What SQLite itself says for each fault (sqlite3.OperationalError in every case).
SQLITE_ERRORS = {
    "locked": "database is locked",
    "full": "database or disk is full",
    "io": "disk I/O error",
}


class StoreFaults:
    """Makes the store's next writes fail at BEGIN with SQLite's real error."""

    def __init__(self):
        self.left = 0
        self.error = SQLITE_ERRORS["locked"]
        self.refused = 0

    def fail_next(self, count: int, kind: str = "locked") -> None:
        self.left, self.error = count, SQLITE_ERRORS[kind]

    def fail_until_cleared(self, kind: str = "locked") -> None:
        self.fail_next(10**9, kind)

    def clear(self) -> None:
        self.left = 0


@pytest.fixture
def store_faults(monkeypatch):
    import sqlite3

    from beaconlite.store import database

    faults = StoreFaults()
    real_begin = database._begin

    def begin(conn):
        if faults.left > 0:
            faults.left -= 1
            faults.refused += 1
            raise sqlite3.OperationalError(faults.error)
        real_begin(conn)

    monkeypatch.setattr(database, "_begin", begin)
    yield faults
    faults.clear()


class ExternalLock:
    """Another process holding an exclusive transaction on a database file."""

    CODE = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
        "c.execute('ROLLBACK')\n"
    )

    def __init__(self, path: Path):
        self.path = path
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> ExternalLock:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.CODE, str(self.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "locked"
        self.locked_at = time.monotonic()
        return self

    def release(self) -> float:
        """Let go; the monotonic time it did."""
        if self.proc and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(10)
            self.released_at = time.monotonic()
        return self.released_at

    def __exit__(self, *exc) -> None:
        self.release()


def as_unprivileged(argv: list[str]) -> list[str]:
    """argv run so that file permissions apply: as root, without the capabilities that
    override them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH); skips where that cannot be done."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv(1): file permissions cannot be tested")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *argv]


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs (needs root with CAP_SYS_ADMIN): (mount point, fill(), free())."""
    if not sys.platform.startswith("linux"):
        pytest.skip("tmpfs mounts are Linux-only")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")

    class Disk:
        path = mount
        filler = mount / "filler"

        def fill(self) -> None:
            with open(self.filler, "ab", buffering=0) as f:  # nothing left to flush at close
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass

        def free(self) -> None:
            self.filler.unlink(missing_ok=True)

    try:
        yield Disk()
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
