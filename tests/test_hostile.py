"""Hostile peers: every misbehaving server ends in a correct step status within the deadline,
with memory bounded."""

from __future__ import annotations

import resource
import time

import pytest
from test_kinds import checks
from test_runner import job, run_to_end


@pytest.mark.parametrize(
    "route,status,error",
    [
        ("reset", "error", "Connection"),
        ("garbage", "error", "Connection"),
        ("big", "error", "larger than max_body"),
        ("big?undeclared", "error", "larger than max_body"),
        ("redirect", "error", "TooManyRedirects"),
        ("trickle", "timeout", None),
        ("trickleheaders", "timeout", None),
        ("hang", "timeout", None),
    ],
)
def test_hostile_peer(runner, http_server, route, status, error):
    r = runner(
        job("web", checks(f'name = "c"\nurl = "{http_server.url}/{route}"'), timeout="2s")
        + '[jobs.http]\nmax_body = "5MB"\nread_timeout = "300s"\n'
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    run, steps = run_to_end(r, "web", bound=5)
    assert time.monotonic() - t0 < 2.5  # within the deadline (plus recording)
    assert run.status == status and steps[0].status == status, (run.error, steps[0].error)
    if error:
        assert error in steps[0].error
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 50  # KiB on Linux: a 10 GB body never lands in memory
