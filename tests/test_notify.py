"""Notifications: webhooks and commands, once per outcome, redacted (a real daemon and a real
local HTTP server)."""

from __future__ import annotations

import json
import time

from conftest import wait_for
from test_daemon import cli


def test_webhooks(daemon, http_server, tmp_path, monkeypatch):
    flag = tmp_path / "healthy"
    secret = "s3cr3t-token-value"
    d = daemon(
        f"""
        [[jobs]]
        name = "ok"
        run = "beaconlite.builtin:noop"
        [[jobs]]
        name = "fails"
        command = ["sh", "-c", "exit 1"]
        [[jobs]]
        name = "slow"
        timeout = "0.3s"
        command = ["sleep", "5"]
        [[jobs]]
        name = "flappy"
        command = ["test", "-f", "{flag}"]
        [[jobs]]
        name = "authed"
        [[jobs.checks]]
        url = "{http_server.url}/500"
        headers = {{Authorization = "Bearer ${{API_TOKEN}}"}}
        [[notify]]
        url = "{http_server.url}/sink"
        on = ["error", "timeout", "recovered"]
        [[notify]]
        url = "{http_server.url}/hang"
        on = ["error"]
        jobs = ["fails"]
    """,
        API_TOKEN=secret,
    )

    def events():
        return [(json.loads(b)["job"], json.loads(b)["event"]) for b in http_server.bodies]

    for job in ("ok", "fails", "slow", "authed"):
        assert cli("-c", d.config, "trigger", job, "--wait").returncode in (0, 1)
    wait_for(
        lambda: {("fails", "error"), ("slow", "timeout"), ("authed", "error")} <= set(events()),
        10,
        what="notifications",
    )
    assert not [e for e in events() if e[0] == "ok"]  # success is not in `on`

    # a hanging sink (the second [[notify]]) does not delay the next run
    t0 = time.monotonic()
    assert cli("-c", d.config, "trigger", "ok", "--wait").returncode == 0
    assert time.monotonic() - t0 < 3

    assert cli("-c", d.config, "trigger", "flappy", "--wait").returncode == 1
    flag.touch()
    assert cli("-c", d.config, "trigger", "flappy", "--wait").returncode == 0
    assert cli("-c", d.config, "trigger", "flappy", "--wait").returncode == 0
    wait_for(lambda: ("flappy", "recovered") in events(), 5, what="recovered")
    time.sleep(0.5)
    assert events().count(("flappy", "recovered")) == 1

    payload = json.loads(next(b for b in http_server.bodies if b'"authed"' in b))
    assert payload["status"] == "error" and payload["steps"][0]["error"] == "status 500, expected 2xx"
    assert any(h.get("Authorization") == f"Bearer {secret}" for h in http_server.headers_seen)
    assert cli("-c", d.config, "runs").returncode == 0
    d.stop()
    everything = d.database.read_bytes() + b"".join(http_server.bodies) + d.log().encode()
    for wal in (d.database.with_name("b.db-wal"),):
        if wal.exists():
            everything += wal.read_bytes()
    assert secret.encode() not in everything


def test_a_retried_failure_notifies_once_with_its_attempts(daemon, http_server):
    d = daemon(
        f"""
        [[jobs]]
        name = "flaky"
        run = "jobs:raise_error"
        retries = 2
        retry_delay = "0.2s"
        [[notify]]
        url = "{http_server.url}/sink"
        on = ["error"]
        """
    )
    assert cli("-c", d.config, "trigger", "flaky").returncode == 0
    wait_for(lambda: len([r for r in d.runs("flaky") if r.status == "error"]) == 3, 10, what="3 attempts")
    wait_for(lambda: http_server.bodies, 5, what="the notification")
    time.sleep(1.0)  # no other notification comes
    (body,) = http_server.bodies
    payload = json.loads(body)
    assert (payload["event"], payload["attempts"], payload["attempt"]) == ("error", 3, 3)
    assert d.stop() == 0
