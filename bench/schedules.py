"""How long does finding the next fire time take, at worst?

    python bench/schedules.py [--repeat 5]

Times `next_after` for pathological but valid schedules (rare days, the 40-year gap of
Feb 29 on a Sunday, dense lists, DST zones, every 100 ms) from many start instants, and
prints the slowest single computation per schedule and overall (SPEC section 10: <= 50 ms).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from beaconlite.cron import parse_schedule, probe
from beaconlite.errors import ScheduleError

PATHOLOGICAL = [
    ("0 0 29 2 */7", "UTC"),  # Feb 29 AND a Sunday: up to 40 years apart
    ("0 0 29 2 1", "UTC"),  # Feb 29 OR a Monday in February
    ("59 23 31 12 *", "Australia/Lord_Howe"),  # once a year, last minute
    ("0 0 31 */2 5", "America/New_York"),  # OR of rare days, in a DST zone
    ("30 2 * 3,10,11 0", "Europe/Berlin"),  # DST Sundays, in the skipped/repeated hours
    ("0-59/7 0-23/5 1-31/3 * 1-5", "America/New_York"),
    ("1,2,3,4,5,6,7,8,9,10,11,12,13 2 * * *", "America/New_York"),
    ("* * * * *", "Australia/Lord_Howe"),
    ("*/15 1 * 4 0", "Australia/Lord_Howe"),  # the repeated half hour, wildcard
    ("every 100ms", "UTC"),
    ("every 365d", "UTC"),
]


def starts() -> list[datetime]:
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    points = [base + timedelta(days=d, minutes=7 * d) for d in range(0, 365 * 3, 11)]
    points.append(datetime(2088, 3, 1, tzinfo=timezone.utc))  # Feb 29 on a Sunday: next in 2128
    # around DST changes, where the search looks back and forth
    for zone in ("America/New_York", "Europe/Berlin", "Australia/Lord_Howe"):
        tz = ZoneInfo(zone)
        t = base
        while t < base + timedelta(days=365):
            if (t + timedelta(hours=1)).astimezone(tz).utcoffset() != t.astimezone(tz).utcoffset():
                points += [t + timedelta(minutes=m) for m in range(-120, 121, 15)]
            t += timedelta(hours=1)
    return points


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    instants = starts()
    worst_all = 0.0
    print(f"{len(instants)} start instants each; slowest single next_after, median of {args.repeat}:")
    for expr, zone in PATHOLOGICAL:
        schedule, tz = parse_schedule(expr), ZoneInfo(zone)
        rounds = []
        for _ in range(args.repeat):
            worst = 0.0
            for after in instants:
                t0 = time.perf_counter()
                schedule.next_after(after, tz)
                worst = max(worst, time.perf_counter() - t0)
            rounds.append(worst)
        slowest = sorted(rounds)[len(rounds) // 2] * 1000
        worst_all = max(worst_all, slowest)
        print(f"  {expr:42} {zone:20} {slowest:7.2f} ms")
    print(f"slowest next fire computation: {worst_all:.2f} ms (target <= 50 ms)")
    t0 = time.perf_counter()
    try:
        probe(parse_schedule("0 0 31 2 *"))
    except ScheduleError:
        pass
    print(f'refusing a schedule that never fires ("0 0 31 2 *", 100 years searched): '
          f"{(time.perf_counter() - t0) * 1000:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
