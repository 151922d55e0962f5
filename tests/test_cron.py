from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from beaconlite.cron import Every, next_fire_times, parse_schedule
from beaconlite.errors import ScheduleError

UTC = timezone.utc


def fires(expr: str, start: str, n: int = 3, tz=UTC) -> list[str]:
    after = datetime.fromisoformat(start).replace(tzinfo=tz)
    return [
        t.astimezone(tz).strftime("%a %Y-%m-%d %H:%M")
        for t in next_fire_times(parse_schedule(expr), after, tz, n)
    ]


def test_every_fifteen_minutes():
    assert fires("*/15 * * * *", "2026-11-24 07:31") == [
        "Tue 2026-11-24 07:45",
        "Tue 2026-11-24 08:00",
        "Tue 2026-11-24 08:15",
    ]


@pytest.mark.parametrize("dow", ["0", "7", "sun", "SUN"])
def test_zero_and_seven_are_sunday(dow):
    # 2026-11-24 is a Tuesday; the next Sunday is the 29th.
    assert fires(f"0 9 * * {dow}", "2026-11-24 00:00", 2) == ["Sun 2026-11-29 09:00", "Sun 2026-12-06 09:00"]


def test_day_of_month_or_day_of_week_when_both_restricted():
    # cron(8): "on the 1st, and on every Friday" -- not "Fridays that are the 1st".
    assert fires("0 0 1 * 5", "2026-11-24 00:00", 4) == [
        "Fri 2026-11-27 00:00",
        "Tue 2026-12-01 00:00",
        "Fri 2026-12-04 00:00",
        "Fri 2026-12-11 00:00",
    ]


def test_restricted_day_of_month_with_star_day_of_week_is_and():
    assert fires("30 6 15 * *", "2026-11-24 00:00", 2) == ["Tue 2026-12-15 06:30", "Fri 2027-01-15 06:30"]


def test_ranges_lists_steps_and_names():
    assert fires("0 9-17/4 * * mon-fri", "2026-11-27 10:00", 4) == [
        "Fri 2026-11-27 13:00",
        "Fri 2026-11-27 17:00",
        "Mon 2026-11-30 09:00",
        "Mon 2026-11-30 13:00",
    ]
    assert fires("0 0 1 jan,jul *", "2026-11-24 00:00", 2) == ["Fri 2027-01-01 00:00", "Thu 2027-07-01 00:00"]


@pytest.mark.parametrize(
    "alias,expected",
    [
        ("@hourly", "Tue 2026-11-24 08:00"),
        ("@daily", "Wed 2026-11-25 00:00"),
        ("@weekly", "Sun 2026-11-29 00:00"),
        ("@monthly", "Tue 2026-12-01 00:00"),
    ],
)
def test_shorthands(alias, expected):
    assert fires(alias, "2026-11-24 07:31", 1) == [expected]


def test_every_is_aligned_to_the_epoch():
    schedule = parse_schedule("every 10m")
    assert schedule == Every(600)
    after = datetime(2026, 11, 24, 7, 31, 12, tzinfo=UTC)
    assert [t.strftime("%H:%M:%S") for t in next_fire_times(schedule, after, UTC, 3)] == [
        "07:40:00",
        "07:50:00",
        "08:00:00",
    ]


def test_cron_in_a_timezone_across_dst():
    berlin = ZoneInfo("Europe/Berlin")
    # 2026-03-29: 02:00 -> 03:00 local. A 02:30 slot does not exist that day: it fires once,
    # at the shifted instant, and the day after as usual.
    got = fires("30 2 * * *", "2026-03-28 12:00", 3, tz=berlin)
    assert got == ["Sun 2026-03-29 03:30", "Mon 2026-03-30 02:30", "Tue 2026-03-31 02:30"]
    # Every hour across the change: no duplicates, strictly increasing.
    schedule = parse_schedule("0 * * * *")
    after = datetime(2026, 3, 29, 0, 30, tzinfo=berlin)
    times = next_fire_times(schedule, after, berlin, 4)
    assert all(b > a for a, b in zip(times, times[1:]))
    assert [(b - a).total_seconds() for a, b in zip(times, times[1:])] == [3600, 3600, 3600]


@pytest.mark.parametrize(
    "expr",
    [
        "* * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * * 13 *",
        "* * * * 8",
        "*/0 * * * *",
        "5-1 * * * *",
        "a * * * *",
        "@never",
        "every",
        "every 5x",
        "",
    ],
)
def test_bad_schedules(expr):
    with pytest.raises(ScheduleError):
        parse_schedule(expr)


def test_trigger_lists_a_bounded_number_of_slots_after_a_long_gap():
    """APScheduler's own loop over the trigger, after a week asleep with a 1 s job."""
    from beaconlite.scheduler import MAX_LISTED, ScheduleTrigger

    trigger = ScheduleTrigger(parse_schedule("every 1s"), UTC)
    now = datetime(2026, 11, 24, 12, 0, 0, 500000, tzinfo=UTC)
    first = datetime(2026, 11, 17, 12, 0, 0, tzinfo=UTC)
    listed, t = [], first
    while t is not None and t <= now:
        listed.append(t)
        t = trigger.get_next_fire_time(t, now)
    assert len(listed) <= MAX_LISTED + 2
    assert listed[0] == first and listed[-1] == datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
    # a short gap is listed slot by slot
    listed, t = [], datetime(2026, 11, 24, 11, 59, 50, tzinfo=UTC)
    while t <= now:
        listed.append(t)
        t = trigger.get_next_fire_time(t, now)
    assert len(listed) == 11
