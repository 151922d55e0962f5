"""A throwaway PostgreSQL server for the tests: initdb into a temporary directory, started on
a free port of 127.0.0.1 (and a socket in that directory), one fresh database per test.

As root, initdb refuses to run: the server then runs as the ``postgres`` user (runuser).
``pg_ctl -l LOGFILE`` keeps the postmaster off the caller's pipes (pytest's capture would
otherwise wait for it)."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def find_bindir() -> Path | None:
    """The directory of initdb / pg_ctl / postgres, or None."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True) + sorted(
        glob.glob("/usr/local/opt/postgresql*/bin") + glob.glob("/opt/homebrew/opt/postgresql*/bin")
    ):
        if (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def why_unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when they can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the psycopg driver is not installed (pip install -e '.[test]')"
    if find_bindir() is None:
        return "no PostgreSQL server binaries found (apt-get install postgresql)"
    if os.geteuid() == 0 and _pwnam("postgres") is None:
        return "running as root and there is no 'postgres' user to run the server as"
    return None


def _pwnam(name: str):
    import pwd

    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self):
        self.bindir = find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="beaconlite-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._names = itertools.count(1)
        self._as = []
        if os.geteuid() == 0:
            user = _pwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self.bindir / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )

    def _ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), *args)

    def start(self) -> None:
        options = (
            # fsync off: a crash of the server process (-m immediate) loses nothing the OS
            # has; synchronous_commit stays on, or a crash would lose commits it confirmed.
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=300"
        )
        self._ctl("-o", options, "-w", "start")

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m fast`` (sessions ended cleanly) or ``-m immediate`` (a crash)."""
        self._ctl("-m", mode, "-w", "stop")
        self.start()

    def stop(self) -> None:
        try:
            self._ctl("-m", "immediate", "-w", "stop")
        except subprocess.SubprocessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def sql(self, url: str, statement: str, params=()) -> list:
        """Run one statement on ``url`` in a connection of its own; its rows."""
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
