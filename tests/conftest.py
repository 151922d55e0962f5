"""Shared fixtures: temporary databases and configs, the CLI in-process, local HTTP servers."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from beaconlite import store
from beaconlite.cli import main

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
