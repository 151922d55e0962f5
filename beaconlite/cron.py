"""Schedules: cron(8) expressions, ``every DURATION`` and the ``@`` shorthands (SPEC section 10).

The one parser for schedules. It knows nothing of APScheduler (the query commands and
``check-config`` use it without importing the scheduler); ``scheduler.py`` wraps it in an
APScheduler trigger. APScheduler's own CronTrigger is not cron(8): its day-of-week 0 is
Monday, it ANDs day-of-month with day-of-week, and it has no cron(8) daylight-saving rules.

Daylight saving, in the job's zone, as cron(8) does it: a local time the clock skips fires
once at the first instant of the new time, for a *fixed-time* job (neither its minute nor
its hour field starts with ``*``); a *wildcard* job follows the new clock. A local time the
clock repeats fires once (the first pass) for a fixed-time job, in both passes for a
wildcard job. ``every`` slots lie on an exact grid of whole milliseconds from the epoch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from beaconlite.durations import duration_ms
from beaconlite.errors import ScheduleError

log = logging.getLogger(__name__)

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
MIN_EVERY_MS = 100
SHORTHANDS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (name, low, high, names) per field, as in crontab(5)
FIELDS = [
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day-of-month", 1, 31, None),
    ("month", 1, 12, MONTHS),
    ("day-of-week", 0, 7, DAYS),
]
# Far enough for any combination that fires at all: Feb 29 on a given weekday recurs up to
# 40 years apart (2088, then 2128: 2100 is no leap year).
SEARCH_LIMIT = timedelta(days=366 * 100)
# The largest change of a zone's offset looked around (DST is 1 h, 30 min on Lord Howe;
# some zones once had double summer time).
MAX_SHIFT = timedelta(hours=3)


# -- parsing --------------------------------------------------------------------------------


def _value(text: str, name: str, low: int, names: list[str] | None) -> int:
    if names and text.lower() in names:
        return names.index(text.lower()) + (1 if low == 1 else 0)
    if not text or not (text.isascii() and text.isdigit()):
        return _bad(f"{_q(text)} is not a number in the {name} field")
    if len(text) > 2:
        return _bad(f"{_q(text)} is out of range in the {name} field")
    return int(text)


def _bad(message: str):
    raise ScheduleError(message)


def _q(text: str) -> str:
    """A user's text quoted for a message, cut short if it is absurdly long."""
    return repr(text if len(text) <= 24 else text[:20] + "...")


def _parse_field(text: str, name: str, low: int, high: int, names) -> tuple[frozenset, bool]:
    """The allowed values, and whether the field is a wildcard (starts with '*')."""
    values: set[int] = set()
    for part in text.split(","):
        base, stepped, step_text = part.partition("/")
        step = 1
        if stepped:
            if not (step_text.isascii() and step_text.isdigit()) or len(step_text) > 2 or int(step_text) == 0:
                _bad(f"bad step {_q(step_text)} in the {name} field")
            step = int(step_text)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _value(a, name, low, names), _value(b, name, low, names)
        else:
            first = _value(base, name, low, names)
            # N/S is N-MAX/S, as BSD cron, croniter, cronsim and systemd read it.
            last = high if stepped else first
        if not (low <= first <= high and low <= last <= high) or first > last:
            _bad(f"{_q(base)} is out of range {low}-{high} in the {name} field")
        values.update(range(first, last + 1, step))
    return frozenset(values), text.startswith("*")


@dataclass(frozen=True)
class Cron:
    minutes: frozenset
    hours: frozenset
    days: frozenset
    months: frozenset
    weekdays: frozenset  # 0 = Sunday (7 folded into 0)
    days_any: bool
    weekdays_any: bool
    fixed_time: bool  # neither the minute nor the hour field starts with '*'

    def _day_matches(self, d: datetime) -> bool:
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        # cron(8): when both fields are restricted, a day matching either one runs.
        if self.days_any or self.weekdays_any:
            return dom and dow
        return dom or dow

    def _local_matches(self, t: datetime):
        """Naive local times from ``t`` (whole minutes) that match the fields, in order."""
        end = t + SEARCH_LIMIT
        minutes = sorted(self.minutes)
        while t < end:
            if t.month not in self.months:
                year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
                t = t.replace(year=year, month=month, day=1, hour=0, minute=0)
            elif not self._day_matches(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
            elif t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0)
            else:
                later = [m for m in minutes if m >= t.minute]
                if not later:
                    t = (t + timedelta(hours=1)).replace(minute=0)
                    continue
                t = t.replace(minute=later[0])
                yield t
                t += timedelta(minutes=1)

    def _instants(self, local: datetime, tz: tzinfo) -> list[datetime]:
        """When a matching local time fires: once; twice or once when the clock repeats
        it; at the end of the gap or never when the clock skips it (see the module doc)."""
        first = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
        second = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
        if first == second:
            return [first]
        if first.astimezone(tz).replace(tzinfo=None) == local:  # repeated: fold=0 is the first pass
            return [first] if self.fixed_time else [first, second]
        return [_transition(second, first, tz)] if self.fixed_time else []  # skipped

    def next_after(self, after: datetime, tz: tzinfo) -> datetime | None:
        """The first fire time strictly after ``after`` (aware), in UTC; None if none in
        the next hundred years."""
        after = after.astimezone(UTC)
        local = after.astimezone(tz).replace(tzinfo=None, fold=0, second=0, microsecond=0)
        # Near a change of the zone's offset, local times up to MAX_SHIFT before ``after``'s
        # may still fire after it (the repeated hour); elsewhere the mapping is monotonic.
        start = local if _steady(tz, after) else local - MAX_SHIFT
        best = best_local = None
        for candidate in self._local_matches(start):
            if best_local is not None and (candidate > best_local + MAX_SHIFT or _steady(tz, best)):
                break  # no later local time can fire before ``best``
            for instant in self._instants(candidate, tz):
                if instant > after and (best is None or instant < best):
                    best, best_local = instant, candidate
        return best


def _steady(tz: tzinfo, at: datetime) -> bool:
    """The zone's offset is the same from MAX_SHIFT before ``at`` to MAX_SHIFT after it."""
    return (
        (at - MAX_SHIFT).astimezone(tz).utcoffset()
        == at.astimezone(tz).utcoffset()
        == (at + MAX_SHIFT).astimezone(tz).utcoffset()
    )


def _transition(before: datetime, after: datetime, tz: tzinfo) -> datetime:
    """The instant in (before, after] where the zone's offset changes (to the second)."""
    target = after.astimezone(tz).utcoffset()
    while after - before > timedelta(seconds=1):
        middle = before + (after - before) / 2
        if middle.astimezone(tz).utcoffset() == target:
            after = middle
        else:
            before = middle
    return after.replace(microsecond=0)


@dataclass(frozen=True)
class Every:
    ms: int  # the period in whole milliseconds

    @property
    def seconds(self) -> float:
        return self.ms / 1000

    def latest_at_or_before(self, at: datetime) -> datetime:
        return EPOCH + (((at.astimezone(UTC) - EPOCH) // ONE_MS) // self.ms * self.ms) * ONE_MS

    def next_after(self, after: datetime, tz: tzinfo) -> datetime:
        # On the grid from the Unix epoch ("every 10m" -> :00, :10, :20 ...), in integer
        # milliseconds: a float would put 1.1 s slots on its neighbours and repeat them.
        elapsed_ms = (after.astimezone(UTC) - EPOCH) // ONE_MS
        return EPOCH + (elapsed_ms // self.ms + 1) * self.ms * ONE_MS


Schedule = Cron | Every


def parse_schedule(text: str) -> Schedule:
    """Parse a schedule string; raise ScheduleError with a message fit for a user."""
    if not isinstance(text, str) or not text.strip(" \t"):
        raise ScheduleError("a schedule must be a non-empty string")
    text = text.strip(" \t")
    if not text.isascii() or any(c.isspace() and c not in " \t" for c in text):
        raise ScheduleError(f"{_q(text)} holds characters other than ASCII letters, digits and spaces")
    if text.startswith("every "):
        try:
            ms = duration_ms(text[6:].strip(" \t"))
        except ValueError as e:
            raise ScheduleError(str(e)) from None
        if ms < MIN_EVERY_MS:
            raise ScheduleError(f"an `every` interval is at least {MIN_EVERY_MS}ms")
        return Every(ms)
    if text.startswith("@"):
        if text.lower() not in SHORTHANDS:
            raise ScheduleError(f"unknown shorthand {_q(text)} (one of {', '.join(SHORTHANDS)})")
        text = SHORTHANDS[text.lower()]
    parts = text.split()
    if len(parts) != 5:
        raise ScheduleError(
            f"{_q(text)} is not a cron expression (5 fields: minute hour day-of-month month "
            'day-of-week), "every DURATION" or an @ shorthand'
        )
    parsed = [_parse_field(p, *spec) for p, spec in zip(parts, FIELDS)]
    return Cron(
        minutes=parsed[0][0],
        hours=parsed[1][0],
        days=parsed[2][0],
        months=parsed[3][0],
        weekdays=frozenset(d % 7 for d in parsed[4][0]),
        days_any=parsed[2][1],
        weekdays_any=parsed[4][1],
        fixed_time=not (parsed[0][1] or parsed[1][1]),
    )


def next_fire_times(schedule: Schedule, after: datetime, tz: tzinfo, count: int) -> list[datetime]:
    times = []
    for _ in range(count):
        nxt = schedule.next_after(after, tz)
        if nxt is None:
            break
        times.append(nxt)
        after = nxt
    return times


def probe(schedule: Schedule) -> None:
    """Refuse a schedule that never fires (e.g. "0 0 31 2 *")."""
    if schedule.next_after(datetime.now(UTC), UTC) is None:
        raise ScheduleError("the schedule never fires")


def due_slots(
    schedule: Schedule, tz: tzinfo, after: float, until: float, cap: int = 100_000
) -> tuple[list[float], bool]:
    """Slots in (after, until] as epoch seconds; at most ``cap``, and whether there were more."""
    slots: list[float] = []
    # fromtimestamp rounds to the microsecond: a float slot comes back exactly on its grid.
    t: datetime | None = datetime.fromtimestamp(after, UTC)
    while len(slots) < cap:
        t = schedule.next_after(t, tz)
        if t is None or t.timestamp() > until:
            return slots, False
        slots.append(t.timestamp())
    nxt = schedule.next_after(t, tz)
    return slots, nxt is not None and nxt.timestamp() <= until


def resolve_timezone(name: str) -> tzinfo:
    """A tzinfo for a `timezone` key ("local": the system's IANA zone). The config checked
    the name; a system whose own zone cannot be told is logged, once, and runs on UTC."""
    if name != "local":
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            return _fallback(f"time zone {name!r} is not available")
    try:
        import tzlocal

        return tzlocal.get_localzone()
    except Exception as e:  # an unusual system zone setup
        why = " ".join(str(e).split())
        return _fallback(f"the system's time zone cannot be told ({type(e).__name__}: {why})")


_warned: set[str] = set()


def _fallback(why: str) -> tzinfo:
    if why not in _warned:
        _warned.add(why)
        log.warning("%s; schedules in it use UTC", why, extra={"event": "schedule.timezone"})
    return UTC
