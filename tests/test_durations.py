"""Durations and sizes as users write them."""

from __future__ import annotations

import pytest

from beaconlite.durations import parse_duration, parse_size


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("250ms", 0.25),
        ("30s", 30),
        ("15m", 900),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        (90, 90),
        (1.5, 1.5),
        ("0", 0),
        ("365d", 365 * 86400),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5x", "", "m", "1h 30", "-1s", "366d", "1e3", True, [1]])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    "text,size",
    [("512KB", 512_000), ("50MB", 50_000_000), ("50MiB", 50 * 2**20), (1024, 1024), ("1GiB", 2**30)],
)
def test_sizes(text, size):
    assert parse_size(text) == size
