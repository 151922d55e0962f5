"""Reading a gap between two ticks: a suspend, a freeze, or nothing."""

from __future__ import annotations

import pytest

from beaconlite import clock


@pytest.mark.parametrize(
    "mono, elapsed, wall, cpu, expected",
    [
        (1.0, 1.0, 1.0, 0.01, None),  # an ordinary tick
        (2.5, 2.5, 2.5, 0.01, None),  # late, but within the 2 s a tick may be
        (
            10.0,
            10.0,
            10.0,
            0.2,
            "the daemon was frozen for 8.80s",
        ),  # SIGSTOP: every clock moved but the CPU's
        (10.0, 10.0, 10.0, 9.5, None),  # a burst of runs kept the tick waiting: load, not a freeze
        (10.0, 10.0, 10.0, 4.0, "the daemon was frozen for 5.00s"),  # busy, then stopped
        (1.0, 3601.0, 3601.0, 0.0, "the machine was suspended for 1h00m"),  # monotonic stood still
    ],
)
def test_explain_gap(mono, elapsed, wall, cpu, expected, monkeypatch):
    monkeypatch.setattr(clock, "HAS_BOOTTIME", True)
    before = clock.Clocks(100.0, 100.0, 100.0, 7.0)
    after = clock.Clocks(100.0 + mono, 100.0 + elapsed, 100.0 + wall, 7.0 + cpu)
    assert clock.explain_gap(before, after, 1.0) == expected


def test_without_boottime_a_wall_jump_reads_as_a_suspend(monkeypatch):
    monkeypatch.setattr(clock, "HAS_BOOTTIME", False)
    gap = clock.explain_gap(clock.Clocks(0, 0, 0), clock.Clocks(1.0, 1.0, 600.0), 1.0)
    assert gap == "the machine was suspended for 9m59s"
