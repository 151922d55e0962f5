from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beaconlite.cron import EPOCH, Every, due_slots, next_fire_times, parse_schedule, probe
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
    assert schedule == Every(600_000)
    after = datetime(2026, 11, 24, 7, 31, 12, tzinfo=UTC)
    assert [t.strftime("%H:%M:%S") for t in next_fire_times(schedule, after, UTC, 3)] == [
        "07:40:00",
        "07:50:00",
        "08:00:00",
    ]


# -- daylight saving, as cron(8): a table written from its rules (SPEC section 10) -----------
#
# Transitions (facts about the zones): New York 2026-03-08 07:00Z (EST -> EDT), 2026-11-01
# 06:00Z (EDT -> EST), 2027-03-14 07:00Z; Berlin 2026-03-29 01:00Z (CET -> CEST), 2026-10-25
# 01:00Z; Lord Howe 2027-10-02 15:30Z (+10:30 -> +11), 2027-04-03 15:00Z (+11 -> +10:30).
# Fixed-time jobs (neither minute nor hour starts with "*"): a skipped local time fires once,
# at the first instant of the new time; a repeated one, in its first pass. Wildcard jobs
# follow the clock: nothing for a skipped time, both passes of a repeated one.

DST = [
    # New York, clock jumps forward: 02:00-03:00 EST does not exist on 2026-03-08
    ("America/New_York", "30 2 * * *", "2026-03-07T12:00", ["2026-03-08T07:00", "2026-03-09T06:30"]),
    ("America/New_York", "0 2-3 * * *", "2026-03-08T05:00", ["2026-03-08T07:00", "2026-03-09T06:00"]),
    ("America/New_York", "15 2,3 * * *", "2027-03-14T05:00", ["2027-03-14T07:00", "2027-03-14T07:15"]),
    ("America/New_York", "0 * * * *", "2026-03-08T05:30",
     ["2026-03-08T06:00", "2026-03-08T07:00", "2026-03-08T08:00"]),
    ("America/New_York", "30 * * * *", "2026-03-08T06:00", ["2026-03-08T06:30", "2026-03-08T07:30"]),
    ("America/New_York", "*/30 * * * *", "2026-03-08T06:00",
     ["2026-03-08T06:30", "2026-03-08T07:00", "2026-03-08T07:30"]),
    ("America/New_York", "5-59/10 2 * * *", "2026-03-08T05:00", ["2026-03-08T07:00", "2026-03-09T06:05"]),
    # New York, clock goes back: 01:00-02:00 passes twice on 2026-11-01 (05Z-06Z EDT, 06Z-07Z EST)
    ("America/New_York", "0 * * * *", "2026-11-01T04:30",
     ["2026-11-01T05:00", "2026-11-01T06:00", "2026-11-01T07:00"]),
    ("America/New_York", "30 1 * * *", "2026-11-01T04:00", ["2026-11-01T05:30", "2026-11-02T06:30"]),
    ("America/New_York", "0,30 1 * * *", "2026-11-01T04:00",
     ["2026-11-01T05:00", "2026-11-01T05:30", "2026-11-02T06:00"]),
    ("America/New_York", "*/15 * * * *", "2026-11-01T05:40",
     ["2026-11-01T05:45", "2026-11-01T06:00", "2026-11-01T06:15", "2026-11-01T06:30"]),
    ("America/New_York", "@hourly", "2026-11-01T05:30", ["2026-11-01T06:00", "2026-11-01T07:00"]),
    # Berlin
    ("Europe/Berlin", "30 2 * * *", "2026-03-28T12:00", ["2026-03-29T01:00", "2026-03-30T00:30"]),
    ("Europe/Berlin", "30 2 * * *", "2026-10-24T12:00", ["2026-10-25T00:30", "2026-10-26T01:30"]),
    ("Europe/Berlin", "*/30 * * * *", "2026-10-24T23:45",
     ["2026-10-25T00:00", "2026-10-25T00:30", "2026-10-25T01:00", "2026-10-25T01:30", "2026-10-25T02:00"]),
    # Lord Howe: 30-minute changes. 02:00-02:30 skipped on 2027-10-03; 01:30-02:00 twice on 2027-04-04
    ("Australia/Lord_Howe", "15,30 2 * * *", "2027-10-02T14:30",
     ["2027-10-02T15:30", "2027-10-03T15:15", "2027-10-03T15:30"]),
    ("Australia/Lord_Howe", "45 1 * * *", "2027-04-03T12:00", ["2027-04-03T14:45", "2027-04-04T15:15"]),
    ("Australia/Lord_Howe", "*/15 * * * *", "2027-04-03T14:20",
     ["2027-04-03T14:30", "2027-04-03T14:45", "2027-04-03T15:00", "2027-04-03T15:15", "2027-04-03T15:30"]),
    # A zone without DST, with a half-hour offset
    ("Asia/Kolkata", "30 2 * * *", "2026-03-07T12:00", ["2026-03-07T21:00", "2026-03-08T21:00"]),
]  # fmt: skip


@pytest.mark.parametrize("zone, expr, start, expected", DST)
def test_daylight_saving_as_cron8(zone, expr, start, expected):
    after = datetime.fromisoformat(start).replace(tzinfo=UTC)
    times = next_fire_times(parse_schedule(expr), after, ZoneInfo(zone), len(expected))
    assert [t.strftime("%Y-%m-%dT%H:%M") for t in times] == expected


def test_an_hourly_job_fires_25_times_on_the_day_the_clock_goes_back():
    ny = ZoneInfo("America/New_York")
    start = datetime(2026, 11, 1, 0, 0, tzinfo=ny) - timedelta(seconds=1)
    end = datetime(2026, 11, 2, 0, 0, tzinfo=ny)
    slots, _ = due_slots(parse_schedule("0 * * * *"), ny, start.timestamp(), end.timestamp() - 1)
    assert len(slots) == 25 and len(set(slots)) == 25


def test_n_slash_s_is_n_to_the_end_of_the_range():
    assert fires("0 22/1 * * *", "2026-11-24 00:00", 3) == [
        "Tue 2026-11-24 22:00",
        "Tue 2026-11-24 23:00",
        "Wed 2026-11-25 22:00",
    ]
    assert fires("50/5 9 * * *", "2026-11-24 00:00", 3) == [
        "Tue 2026-11-24 09:50",
        "Tue 2026-11-24 09:55",
        "Wed 2026-11-25 09:50",
    ]


def test_a_schedule_that_recurs_40_years_apart_is_found():
    # Feb 29 AND a Sunday ("*/7" starts with "*": day-of-week is unrestricted, so AND).
    assert fires("0 0 29 2 */7", "2088-03-01 00:00", 1) == ["Sun 2128-02-29 00:00"]
    assert parse_schedule("0 0 29 2 1") is not None  # under OR: Feb 29, or any Monday in Feb


@pytest.mark.parametrize(
    "expr, message",
    [
        ("0 0 31 2 *", "never fires"),
        ("* * \u0663 * *", "ASCII"),  # Arabic-Indic three
        ("* * \uff13 * *", "ASCII"),  # full-width three
        ("* * \u00b2 * *", "ASCII"),  # superscript two
        ("*\u00a0* * * *", "ASCII"),  # a no-break space
        ("*\u3000* * * *", "ASCII"),  # an ideographic space
        ("every \u0665m", "ASCII"),
        ("* * " + "9" * 5000 + " * *", "out of range"),
        ("*/" + "9" * 5000 + " * * * *", "bad step"),
        ("every " + "9" * 5000 + "s", "out of range"),
        ("every 50ms", "at least 100ms"),
        ("every 1.0005s", "whole number of milliseconds"),
        ("every 0s", "at least 100ms"),
    ],
)
def test_bad_schedules_say_why_in_plain_words(expr, message):
    with pytest.raises(ScheduleError) as caught:
        probe(parse_schedule(expr))
    text = str(caught.value)
    assert message in text and "\n" not in text and "int()" not in text and "4300" not in text
    assert len(text) < 300


@pytest.mark.parametrize("text, ms", [("every 1.1s", 1100), ("every 100ms", 100), ("every 1.001s", 1001)])
def test_every_is_a_whole_number_of_milliseconds(text, ms):
    assert parse_schedule(text) == Every(ms)


@settings(max_examples=400, deadline=None)
@given(
    period=st.integers(100, 10_000_000),
    start_us=st.integers(0, 4_102_444_800_000_000),  # 1970 .. 2100, in microseconds
)
def test_every_slots_lie_on_the_grid_and_strictly_increase(period, start_us):
    schedule = Every(period)
    after = EPOCH + timedelta(microseconds=start_us)
    previous = after
    for t in next_fire_times(schedule, after, UTC, 5):
        assert t > previous and (t - EPOCH) % timedelta(milliseconds=period) == timedelta(0)
        previous = t
    # as epoch floats through the ledger and back, the slots are the same
    slots, _ = due_slots(
        schedule, UTC, after.timestamp(), (after + timedelta(milliseconds=5 * period)).timestamp()
    )
    assert all(b > a for a, b in zip(slots, slots[1:]))
    assert all(round(s * 1000) % period == 0 for s in slots)


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
