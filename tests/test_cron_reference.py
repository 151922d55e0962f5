"""A differential test of the cron parser against an independent implementation (cronsim).

Thousands of random expressions and start instants, in UTC and in several zones, compared
outside daylight-saving transitions (where the two are meant to differ: the DST rules of
SPEC section 10 have their own table in test_cron.py). A reference is a witness, not an
authority; its known deviations from cron(8) are left out of the draw:
- cronsim reads a one-value range with a step, "a-a/S", as "a-MAX/S" (cron(8): just a);
- croniter (not used here) reads "a-a" as the whole range.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beaconlite.cron import FIELDS, next_fire_times, parse_schedule

cronsim = __import__("pytest").importorskip("cronsim")

UTC = timezone.utc
ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe"]
NAMES = {3: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
         4: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]}  # fmt: skip


@st.composite
def part(draw, index: int) -> str:
    _, low, high, _ = FIELDS[index]
    if index == 2:
        high = 28  # every month has the day, so the reference's own day checks never refuse
    value = st.integers(low, high)

    def word(n: int) -> str:
        names = NAMES.get(index)
        if names and n != 7 and draw(st.booleans()):  # 7 is Sunday too, but "sun" is 0
            return names[n - low if index == 3 else n]
        return str(n)

    kind = draw(st.sampled_from(["*", "*/S", "a", "a-b", "a-b/S", "a/S"]))
    step = draw(st.integers(1, max(1, (high - low) // 2)))
    a, b = sorted((draw(value), draw(value)))
    if kind == "a-b/S" and a == b:
        b = min(high, a + 1)  # not "a-a/S": cronsim reads it as "a-MAX/S"
        if a == b:
            kind = "a"
    return {
        "*": "*",
        "*/S": f"*/{step}",
        "a": word(a),
        "a-b": f"{word(a)}-{word(b)}",
        "a-b/S": f"{word(a)}-{word(b)}/{step}",
        "a/S": f"{a}/{step}",
    }[kind]


@st.composite
def expressions(draw) -> str:
    fields = []
    for index in range(5):
        parts = draw(st.lists(part(index), min_size=1, max_size=3))
        if "*" in parts[0] and len(parts) > 1:
            parts = parts[:1]  # a list starting with "*" is the wildcard case already
        fields.append(",".join(parts))
    return " ".join(fields)


def first_change(tz, start: datetime, end: datetime) -> datetime | None:
    """When the zone's offset first changes in [start, end] (to the minute), or None."""
    offset = start.astimezone(tz).utcoffset()
    probe = start
    while probe <= end:
        nxt = probe + timedelta(days=1)
        if nxt.astimezone(tz).utcoffset() != offset:
            low, high = probe, nxt
            while high - low > timedelta(minutes=1):
                middle = low + (high - low) / 2
                low, high = (low, middle) if middle.astimezone(tz).utcoffset() != offset else (middle, high)
            return high
        probe = nxt
    return None


def stable_until(tz, start: datetime, times: list[datetime]) -> list[datetime]:
    """The fire times more than 3 h before the zone's offset first changes after ``start``."""
    if not times:
        return times
    change = first_change(tz, start, times[-1])
    return [t for t in times if change is None or t < change - timedelta(hours=3)]


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    expr=expressions(),
    zone=st.sampled_from(ZONES),
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)),
)
def test_next_fires_agree_with_cronsim_outside_dst_changes(expr, zone, start):
    tz = ZoneInfo(zone)
    after = start.replace(tzinfo=UTC)
    ours = next_fire_times(parse_schedule(expr), after, tz, 5)
    it = cronsim.CronSim(expr, after.astimezone(tz))
    theirs = [next(it).astimezone(UTC) for _ in range(5)]
    ours, theirs = stable_until(tz, after, ours), stable_until(tz, after, theirs)
    n = min(len(ours), len(theirs))
    assert ours[:n] == theirs[:n], (expr, zone, after)
