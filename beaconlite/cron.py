"""Schedules: cron(8) expressions, ``every DURATION`` and the ``@`` shorthands.

The one parser for schedules. It knows nothing of APScheduler (the query commands and
``check-config`` use it without importing the scheduler); ``scheduler.py`` wraps it in an
APScheduler trigger. APScheduler's own CronTrigger is not cron(8): its day-of-week 0 is
Monday and it ANDs day-of-month with day-of-week.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo

from beaconlite.durations import parse_duration
from beaconlite.errors import ScheduleError

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
# Far enough to cross any legal combination (Feb 29 on a given weekday: 28 years).
SEARCH_LIMIT = timedelta(days=366 * 29)


def _value(text: str, low: int, names: list[str] | None) -> int:
    if names and text.lower() in names:
        return names.index(text.lower()) + (1 if low == 1 else 0)
    if not text.isdigit():
        raise ScheduleError(f"{text!r} is not a number")
    return int(text)


def _parse_field(text: str, name: str, low: int, high: int, names) -> tuple[frozenset, bool]:
    """Return the allowed values and whether the field is unrestricted ('*')."""
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, _, step_text = part.partition("/")
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"bad step {step_text!r} in the {name} field")
            step = int(step_text)
        if part == "*":
            first, last = low, high
        elif "-" in part:
            a, _, b = part.partition("-")
            first, last = _value(a, low, names), _value(b, low, names)
        else:
            first = _value(part, low, names)
            last = high if step > 1 else first
        if not (low <= first <= high and low <= last <= high) or first > last:
            raise ScheduleError(f"{part!r} is out of range {low}-{high} in the {name} field")
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

    def _day_matches(self, d: datetime) -> bool:
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        # cron(8): when both fields are restricted, a day matching either one runs.
        if self.days_any or self.weekdays_any:
            return dom and dow
        return dom or dow

    def next_after(self, after: datetime, tz: tzinfo) -> datetime | None:
        """The first fire time strictly after ``after`` (aware), in UTC."""
        after_utc = after.astimezone(timezone.utc)
        t = after.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
        t += timedelta(minutes=1)
        end = t + SEARCH_LIMIT
        while t < end:
            if t.month not in self.months:
                year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
                t = t.replace(year=year, month=month, day=1, hour=0, minute=0)
            elif not self._day_matches(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
            elif t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0)
            elif t.minute not in self.minutes:
                t += timedelta(minutes=1)
            else:
                # A local time skipped by a DST change maps forward (fold=0): it fires once,
                # at the shifted instant; the "strictly after" test removes the duplicate.
                fire = t.replace(tzinfo=tz).astimezone(timezone.utc)
                if fire > after_utc:
                    return fire
                t += timedelta(minutes=1)
        return None


@dataclass(frozen=True)
class Every:
    seconds: float

    def next_after(self, after: datetime, tz: tzinfo) -> datetime:
        # Aligned to the Unix epoch, like "every 10m" -> :00, :10, :20 ...
        ts = after.timestamp()
        slot = (math.floor(ts / self.seconds) + 1) * self.seconds
        return datetime.fromtimestamp(slot, timezone.utc)


Schedule = Cron | Every


def parse_schedule(text: str) -> Schedule:
    """Parse a schedule string; raise ScheduleError with a message fit for a user."""
    if not isinstance(text, str) or not text.strip():
        raise ScheduleError("a schedule must be a non-empty string")
    text = text.strip()
    if text.startswith("every "):
        try:
            seconds = parse_duration(text[6:].strip())
        except ValueError as e:
            raise ScheduleError(str(e)) from None
        if seconds <= 0:
            raise ScheduleError("an interval must be > 0")
        return Every(seconds)
    if text.startswith("@"):
        if text.lower() not in SHORTHANDS:
            raise ScheduleError(f"unknown shorthand {text!r} (one of {', '.join(SHORTHANDS)})")
        text = SHORTHANDS[text.lower()]
    parts = text.split()
    if len(parts) != 5:
        raise ScheduleError(
            f"{text!r} is not a cron expression (5 fields: minute hour day-of-month month "
            'day-of-week), "every DURATION" or an @ shorthand'
        )
    parsed = [_parse_field(p, *spec) for p, spec in zip(parts, FIELDS)]
    weekdays = frozenset(d % 7 for d in parsed[4][0])
    return Cron(
        minutes=parsed[0][0],
        hours=parsed[1][0],
        days=parsed[2][0],
        months=parsed[3][0],
        weekdays=weekdays,
        days_any=parsed[2][1],
        weekdays_any=parsed[4][1],
    )


def next_fire_times(schedule: Schedule, after: datetime, tz: tzinfo, count: int) -> list:
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
    if schedule.next_after(datetime.now(timezone.utc), timezone.utc) is None:
        raise ScheduleError("the schedule never fires")


def due_slots(
    schedule: Schedule, tz: tzinfo, after: float, until: float, cap: int = 100_000
) -> tuple[list[float], bool]:
    """Slots in (after, until] as epoch seconds; at most ``cap``, and whether there were more."""
    slots: list[float] = []
    t: datetime | None = datetime.fromtimestamp(after, timezone.utc)
    while len(slots) < cap:
        t = schedule.next_after(t, tz)
        if t is None or t.timestamp() > until:
            return slots, False
        slots.append(t.timestamp())
    nxt = schedule.next_after(t, tz)
    return slots, nxt is not None and nxt.timestamp() <= until


def resolve_timezone(name: str):
    """A tzinfo for the daemon's `timezone` ("local" -> the system's IANA zone)."""
    from zoneinfo import ZoneInfo

    if name != "local":
        return ZoneInfo(name)
    try:
        import tzlocal

        return tzlocal.get_localzone()
    except Exception:  # an unusual system zone setup: fall back to UTC, not to a crash
        return ZoneInfo("UTC")
