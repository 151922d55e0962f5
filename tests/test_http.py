from __future__ import annotations

import time

import pytest
import requests

from beaconlite.config import HttpSettings
from beaconlite.errors import RunCancelled
from beaconlite.http import RunSession


class Clock:
    """A run's abort state as the session sees it."""

    def __init__(self, left: float):
        self.deadline = time.monotonic() + left
        self.aborted = False
        self.headers: list[str] = []

    def checkpoint(self):
        if self.aborted:
            raise RunCancelled("cancelled")

    def remaining(self):
        return self.deadline - time.monotonic()


def session(c: Clock, **settings) -> RunSession:
    return RunSession(HttpSettings(**settings), c.checkpoint, c.remaining, c.headers.extend)


def test_default_timeouts_capped_to_time_left():
    c = Clock(left=2.0)
    s = session(c, connect_timeout=10, read_timeout=300)
    connect, read = s._timeout(None)
    assert 1.9 < connect <= 2.0 and 1.9 < read <= 2.0
    assert s._timeout((0.5, 1.0)) == (0.5, 1.0)
    c.deadline = time.monotonic() + 1000
    assert s._timeout(None) == (10, 300)
    assert s._timeout(7) == (7, 7)


def test_user_agent_and_header_values_are_learned(http_server):
    c = Clock(left=5)
    s = session(c, user_agent="beaconlite/test")
    assert s.get(f"{http_server.url}/ok", headers={"X-Key": "abc123"}).text == "all ok"
    assert http_server.headers_seen[-1]["User-Agent"] == "beaconlite/test"
    assert c.headers == ["abc123"]


def test_refused_after_abort(http_server):
    c = Clock(left=5)
    s = session(c)
    c.aborted = True
    s.break_off()
    with pytest.raises(RunCancelled):
        s.get(f"{http_server.url}/ok")
    assert http_server.count() == 0


def test_connection_opened_after_break_off_is_refused(http_server):
    c = Clock(left=5)
    s = session(c)
    s.break_off()  # the abort lands between the checkpoint and the connect
    with pytest.raises(requests.ConnectionError, match="aborted"):
        s.get(f"{http_server.url}/ok")
    assert http_server.count() == 0


def test_read_timeout_still_applies_per_read(http_server):
    c = Clock(left=30)
    s = session(c, read_timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(Exception, match="timed out|Read timed out"):
        s.get(f"{http_server.url}/hang")
    assert time.monotonic() - t0 < 1.5
