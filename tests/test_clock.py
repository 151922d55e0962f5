"""Reading a gap between two ticks: a suspend, a freeze, or nothing."""

from __future__ import annotations

import pytest

from beaconlite import clock


@pytest.mark.parametrize(
    "mono, elapsed, wall, expected",
    [
        (1.0, 1.0, 1.0, None),  # an ordinary tick
        (2.5, 2.5, 2.5, None),  # late, but within the 2 s a tick may be
        (10.0, 10.0, 10.0, "the daemon was frozen for 9.00s"),  # SIGSTOP: every clock moved
        (1.0, 3601.0, 3601.0, "the machine was suspended for 1h00m"),  # monotonic stood still
    ],
)
def test_explain_gap(mono, elapsed, wall, expected, monkeypatch):
    monkeypatch.setattr(clock, "HAS_BOOTTIME", True)
    before = clock.Clocks(100.0, 100.0, 100.0)
    after = clock.Clocks(100.0 + mono, 100.0 + elapsed, 100.0 + wall)
    assert clock.explain_gap(before, after, 1.0) == expected


def test_without_boottime_a_wall_jump_reads_as_a_suspend(monkeypatch):
    monkeypatch.setattr(clock, "HAS_BOOTTIME", False)
    gap = clock.explain_gap(clock.Clocks(0, 0, 0), clock.Clocks(1.0, 1.0, 600.0), 1.0)
    assert gap == "the machine was suspended for 9m59s"
