"""Service integration: sd_notify and the watchdog, unit files, notifications, retention."""

from __future__ import annotations

import json
import os
import plistlib
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import DAEMON_DEFAULTS, wait_for
from test_daemon import cli


class NotifySocket:
    """A datagram socket in the abstract namespace, as systemd's NOTIFY_SOCKET."""

    def __init__(self):
        self.name = f"@beaconlite-test-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except OSError:
                continue
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def lines(self, prefix: str) -> list[float]:
        return [t for t, line in self.messages if line.startswith(prefix)]

    def close(self):
        self._stop = True
        self._thread.join(1)
        self.sock.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd is Linux-only")
def test_sd_notify_ready_watchdog_status_stopping(daemon):
    sink = NotifySocket()
    try:
        d = daemon(
            """
            [[jobs]]
            name = "tick"
            schedule = "every 1s"
            run = "beaconlite.builtin:noop"
        """,
            NOTIFY_SOCKET=sink.name,
            WATCHDOG_USEC=2_000_000,
        )
        wait_for(lambda: len(sink.lines("WATCHDOG=1")) >= 4, 5, what="watchdog pings")
        assert sink.lines("READY=1")
        assert any(line.startswith("STATUS=") and "live run" in line for _, line in sink.messages)
        pings = sink.lines("WATCHDOG=1")
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < 1.2  # at least one a second (half of WATCHDOG_USEC)
        assert d.stop() == 0
        assert sink.lines("STOPPING=1")
    finally:
        sink.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd is Linux-only")
def test_no_watchdog_ping_while_a_duty_is_stuck(inproc_daemon):
    """The ping comes from the tick only when every duty got its turn: a wedged duty means
    systemd restarts the daemon."""
    sink = NotifySocket()
    stuck = threading.Event()
    try:
        d = inproc_daemon("", NOTIFY_SOCKET=sink.name, WATCHDOG_USEC=1_000_000)
        wait_for(lambda: len(sink.lines("WATCHDOG=1")) >= 2, 5, what="watchdog pings")
        publish = d._publish
        d._publish = lambda tick: stuck.wait(30) and publish(tick)
        time.sleep(1.0)  # the tick in progress ends in the stuck duty
        wedged_at = time.monotonic()
        time.sleep(1.5)
        assert not [t for t in sink.lines("WATCHDOG=1") if t > wedged_at]
        stuck.set()
        wait_for(lambda: [t for t in sink.lines("WATCHDOG=1") if t > wedged_at], 3, what="pings again")
    finally:
        stuck.set()
        sink.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd is Linux-only")
def test_a_notify_socket_nobody_reads_never_blocks_the_tick(inproc_daemon, tmp_path):
    """A datagram socket whose queue is full would block a blocking sendto() for ever."""
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    deaf.bind(str(tmp_path / "deaf.sock"))  # bound, never read
    try:
        d = inproc_daemon("", NOTIFY_SOCKET=str(tmp_path / "deaf.sock"), WATCHDOG_USEC=200_000)
        ticks = []
        publish = d._publish
        d._publish = lambda tick: (ticks.append(time.monotonic()), publish(tick))
        # 100 ms ticks: the socket's queue (10 datagrams by default) fills within a second.
        wait_for(lambda: len(ticks) >= 30, 6, what="30 ticks with nobody reading the socket")
    finally:
        deaf.close()


def test_systemd_unit_verifies(make_config):
    path = make_config("[[jobs]]\nname = 'a'\nrun = 'beaconlite.builtin:noop'\n")
    out = cli("-c", path, "service", "print")
    assert out.returncode == 0
    unit = out.stdout
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "RestartPreventExitStatus=2",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=beaconlite",
        "StateDirectoryMode=2770",
        "UMask=0007",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "SystemCallFilter=@system-service",
    ):
        assert line in unit, line
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert str(path) in exec_start and exec_start.split("=", 1)[1].split()[0].startswith("/")
    if shutil.which("systemd-analyze"):
        unit_file = path.parent / "beaconlite.service"
        unit_file.write_text(unit)
        verify = subprocess.run(["systemd-analyze", "verify", str(unit_file)], capture_output=True, text=True)
        assert verify.returncode == 0, verify.stderr
    shipped = Path(__file__).resolve().parent.parent / "systemd" / "beaconlite.service"
    text = shipped.read_text()
    assert "Type=notify" in text and "RestartPreventExitStatus=2" in text


HOSTILE = 'we ird "q" $HOME %n \\back;semi'


def unit_words(value: str) -> list[str]:
    """The words of a unit line's value, as systemd reads them (quotes, C escapes, %%, $$)."""
    words = re.findall(r'"((?:[^"\\]|\\.)*)"|(\S+)', value)
    return [re.sub(r"\\(.)", r"\1", q or b).replace("%%", "%").replace("$$", "$") for q, b in words]


def directives(unit: str) -> list[str]:
    return [line.split("=", 1)[0] for line in unit.splitlines() if "=" in line and not line.startswith("#")]


def test_hostile_paths_are_data_in_the_unit_never_syntax(tmp_path):
    """Quotes, $, %, backslashes, spaces and semicolons in the config's and the database's
    paths: the unit has exactly the template's directives and reads back the same paths."""
    plain_dir, hostile_dir = tmp_path / "plain", tmp_path / HOSTILE
    units = {}
    for directory in (plain_dir, hostile_dir):
        directory.mkdir()
        config = directory / f"{HOSTILE}.toml" if directory == hostile_dir else directory / "b.toml"
        config.write_text(f"[daemon]\ndatabase = {json.dumps(str(directory / 'db' / 'b.db'))}\n")
        out = cli("-c", config, "service", "print")
        assert out.returncode == 0, out.stderr
        units[directory] = (config, out.stdout)
    config, unit = units[hostile_dir]
    assert directives(unit) == directives(units[plain_dir][1])
    lines = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert unit_words(lines["ExecStart"])[-3:] == ["--config", str(config), "daemon"]
    assert unit_words(lines["ReadWritePaths"]) == [str(hostile_dir / "db")]
    if shutil.which("systemd-analyze"):
        unit_file = tmp_path / "beaconlite.service"
        unit_file.write_text(unit)
        verify = subprocess.run(["systemd-analyze", "verify", str(unit_file)], capture_output=True, text=True)
        assert verify.returncode == 0, verify.stderr
    plist = plistlib.loads(cli("-c", config, "service", "print", "--launchd").stdout.encode())
    assert plist["ProgramArguments"][-3:] == ["--config", str(config), "daemon"]


@pytest.mark.parametrize("where", ["database", "config path"])
def test_a_control_character_in_a_rendered_path_is_refused(tmp_path, where):
    injected = "bl\nExecStartPre=+touch pwned\nX="
    directory = tmp_path / (injected if where == "config path" else "ok")
    directory.mkdir()
    config = directory / "b.toml"
    database = f"/var/lib/{injected}/b.db" if where == "database" else "state/b.db"
    config.write_text(f"[daemon]\ndatabase = {json.dumps(database)}\n")
    for args in (["service", "print"], ["service", "print", "--launchd"], ["check-config"]):
        out = cli("-c", config, *args)
        assert out.returncode == 2 and out.stdout == "", (args, out.stdout)
        assert "control character" in out.stderr and out.stderr.count("\n") == 1, out.stderr
        assert "Traceback" not in out.stderr


def test_launchd_plist_parses(make_config):
    path = make_config("")
    out = cli("-c", path, "service", "print", "--launchd", "--user")
    plist = plistlib.loads(out.stdout.encode())
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["RunAtLoad"] is True and plist["ProcessType"] == "Standard"
    assert plist["ProgramArguments"][-3:] == ["--config", str(path), "daemon"]
    assert plist["StandardErrorPath"].endswith("beaconlite.log")


def test_service_install_user_pins_the_database(make_config, tmp_path):
    path = make_config("[[jobs]]\nname = 'a'\nrun = 'beaconlite.builtin:noop'\n", database=False)
    out = cli("-c", path, "service", "install", "--user")
    assert out.returncode == 0, out.stderr
    unit = tmp_path / "home" / ".config" / "systemd" / "user" / "beaconlite.service"
    assert unit.exists() and "systemctl --user daemon-reload" in out.stdout
    assert 'database = "' in path.read_text()
    assert cli("-c", path, "check-config").returncode == 0  # still a valid config
    again = cli("-c", path, "service", "install", "--user")
    assert again.returncode == 2 and "--force" in again.stderr
    assert cli("-c", path, "service", "install", "--user", "--force").returncode == 0


# -- notifications ------------------------------------------------------------------------


# -- retention ----------------------------------------------------------------------------


def test_readers_while_the_daemon_writes_20_runs_a_second_and_prunes(daemon):
    d = daemon(
        "".join(
            f'[[jobs]]\nname = "tick-{i}"\nschedule = "every 1s"\nrun = "beaconlite.builtin:noop"\n'
            for i in range(20)
        ),
        defaults=DAEMON_DEFAULTS + "max_concurrent_runs = 50\n",
    )
    conn = sqlite3.connect(d.database, timeout=10)
    old = time.time() - 10 * 86400
    conn.executemany(
        "INSERT INTO run (job, status, trigger, attempt, scheduled_at, started_at, finished_at) "
        "VALUES ('old', 'success', 'schedule', 1, ?, ?, ?)",
        [(old + i, old + i, old + i + 1) for i in range(30_000)],
    )
    conn.commit()
    conn.close()
    errors = []
    stop = threading.Event()

    def read_loop():
        while not stop.is_set():
            out = cli("-c", d.config, "runs", "--json", "--limit", "5")
            if out.returncode != 0:
                errors.append(out.stderr)

    reader = threading.Thread(target=read_loop)
    reader.start()
    out = cli("-c", d.config, "prune", "--older-than", "1d", "--json")
    wait_for(lambda: len(d.runs()) >= 60, 10, what="three seconds of runs")
    stop.set()
    reader.join()
    assert out.returncode == 0 and json.loads(out.stdout)["pruned"] == 30_000
    assert errors == []
    assert "database is locked" not in d.log()
    runs = d.runs()
    assert all(r.job.startswith("tick-") for r in runs)
    assert all(r.status in ("success", "running") for r in runs)


# -- files and modes (SPEC sections 7 and 9) -----------------------------------------------


def test_loose_modes_are_tightened_at_daemon_start(daemon):
    d = daemon('[[jobs]]\nname = "j"\nrun = "beaconlite.builtin:noop"\n', start=False)
    d.database.parent.mkdir(mode=0o700)
    from beaconlite import store

    store.open_writer(d.database)
    store.close()
    lock = d.database.with_name("b.db.lock")
    lock.write_text("")
    os.chmod(d.database, 0o644)
    os.chmod(lock, 0o666)
    d.start()
    for path in (d.database, lock, d.database.with_name("b.db-wal"), d.database.with_name("b.db-shm")):
        assert os.stat(path).st_mode & 0o777 == 0o600, path
    log = d.log()
    assert "tightened the mode of" in log and "from 0644 to 0600" in log and "from 0666 to 0600" in log
    assert d.stop() == 0


@pytest.mark.parametrize("what", ["file", "directory"])
def test_a_config_every_user_can_write_is_refused(make_config, tmp_path, what):
    (tmp_path / "conf").mkdir()
    config = make_config('[[jobs]]\nname = "j"\nrun = "beaconlite.builtin:noop"\n', name="conf/b.toml")
    target = config if what == "file" else config.parent
    os.chmod(target, os.stat(target).st_mode | 0o002)
    out = cli("-c", config, "daemon", timeout=10)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "writable by every user" in out.stderr and "chmod o-w" in out.stderr
    os.chmod(target, (os.stat(target).st_mode | 0o020) & ~0o002)  # group write is fine
    from beaconlite.places import refuse_open_config

    refuse_open_config(config)  # no error
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)  # like /tmp
    (sticky / "b.toml").write_text("")
    os.chmod(sticky / "b.toml", 0o644)
    refuse_open_config(sticky / "b.toml")  # no error


# -- warnings about units that cannot work as rendered (SPEC section 8) ----------------------


def test_service_print_warns_about_paths_the_unit_hides(tmp_path):
    """tmp_path lies under /tmp (PrivateTmp=yes hides it); a config under /root or /home is
    hidden by ProtectHome=yes."""
    config = tmp_path / "b.toml"
    config.write_text('[daemon]\ndatabase = "state/b.db"\n')
    out = cli("-c", config, "service", "print")
    assert out.returncode == 0 and out.stdout.startswith("[Unit]")
    warnings = [line for line in out.stderr.splitlines() if line.startswith("beaconlite: warning: ")]
    assert any(f"the config {config} is under /tmp" in w and "PrivateTmp=yes" in w for w in warnings)
    assert any("the database" in w and "PrivateTmp=yes" in w for w in warnings)
    if str(config).startswith("/tmp/"):
        hidden = Path("/root/.beaconlite-test-config.toml") if os.geteuid() == 0 else None
        if hidden is not None:
            hidden.write_text('[daemon]\ndatabase = "/var/lib/beaconlite/b.db"\n')
            try:
                out = cli("-c", hidden, "service", "print")
                assert "is under /root, which the unit hides (ProtectHome=yes)" in out.stderr
            finally:
                hidden.unlink()


def test_service_user_that_cannot_read_the_config(tmp_path):
    import pwd

    try:
        pwd.getpwnam("beaconlite")
    except KeyError:
        out = cli("-c", _config(tmp_path), "service", "print")
        assert "there is no user 'beaconlite'" in out.stderr and "useradd" in out.stderr
        return
    config = _config(tmp_path)
    os.chmod(config, 0o600)
    out = cli("-c", config, "service", "print")
    assert "user 'beaconlite' cannot read the config" in out.stderr


def test_user_unit_without_lingering_and_install_says_what_it_wrote(make_config, tmp_path):
    path = make_config('[[jobs]]\nname = "a"\nrun = "beaconlite.builtin:noop"\n', database=False)
    out = cli("-c", path, "service", "install", "--user")
    assert out.returncode == 0, out.stderr
    assert "wrote database = " in out.stdout and f"into {path}" in out.stdout
    import getpass

    if not Path("/var/lib/systemd/linger", getpass.getuser()).exists():
        assert "loginctl enable-linger" in out.stderr


def _config(tmp_path) -> Path:
    config = tmp_path / "c.toml"
    config.write_text('[daemon]\ndatabase = "/var/lib/beaconlite/b.db"\n')
    return config


def test_a_cluster_node_unit_names_no_database_path(tmp_path, monkeypatch):
    """A PostgreSQL database is the server's: no ReadWritePaths for it, nothing pinned, and
    the URL's password nowhere in the unit."""
    config = tmp_path / "beaconlite.toml"
    config.write_text(
        '[daemon]\ndatabase = "postgresql://node:${PW}@db.internal:5432/beaconlite"\n'
        "[[jobs]]\nname = 'a'\nrun = 'beaconlite.builtin:noop'\n"
    )
    monkeypatch.setenv("PW", "s3cret-pw")  # the CLI's subprocess inherits it
    out = cli("-c", config, "service", "print")
    assert out.returncode == 0, out.stderr
    assert "ReadWritePaths" not in out.stdout and "s3cret-pw" not in out.stdout
    assert "postgresql" not in out.stdout  # the unit runs the config; the URL stays in it
