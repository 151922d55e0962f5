"""The slot policy as tables: what due slots and one fire become (no clock, no database)."""

from __future__ import annotations

from datetime import timezone

import pytest

from beaconlite.config import JobSpec
from beaconlite.slots import Busy, Fire, Hold, Replace, Skip, SkipRow, Start, admit, collapse

UTC = timezone.utc
T = 1_790_000_040.0  # a slot on the minute grid (divisible by 60)


def job(**kw) -> JobSpec:
    return JobSpec(name="j", kind="python", run="m:f", schedule=kw.pop("schedule", "every 1m"), **kw)


def kinds(actions) -> list[tuple]:
    out = []
    for a in actions:
        if isinstance(a, Start):
            out.append(("start", a.fire.slot, a.fire.trigger))
        elif isinstance(a, SkipRow):
            out.append(("skip", a.why, a.fire.slot, a.slots, a.last_slot))
        elif isinstance(a, Hold):
            out.append(("hold", a.fire.slot))
        else:
            out.append(("replace", a.run_id))
    return out


@pytest.mark.parametrize(
    "spec, slots, now, expected",
    [
        # one slot on time
        ({}, [T], T + 0.01, [("start", T, "schedule")]),
        # one slot late, within misfire_grace (5 min)
        ({}, [T], T + 299, [("start", T, "schedule")]),
        # one slot past misfire_grace: a catch-up run
        ({}, [T], T + 301, [("start", T, "catchup")]),
        # past misfire_grace with catch_up = false: skipped as late
        ({"catch_up": False}, [T], T + 301, [("skip", Skip.LATE, T, 1, T)]),
        # three due slots on time: the latest runs, the other two are one skipped row
        (
            {},
            [T, T + 60, T + 120],
            T + 120.5,
            [("skip", Skip.MISSED, T, 2, T + 60), ("start", T + 120, "schedule")],
        ),
        # the same, long after: a catch-up of the latest
        (
            {},
            [T, T + 60, T + 120],
            T + 3600,
            [("skip", Skip.MISSED, T, 2, T + 60), ("start", T + 120, "catchup")],
        ),
        # the same with catch_up = false: all three are one skipped row
        ({"catch_up": False}, [T, T + 60, T + 120], T + 3600, [("skip", Skip.LATE, T, 3, T + 120)]),
        # APScheduler handed over only the first and the latest of a long gap: counted anyway
        (
            {},
            [T, T + 600],
            T + 600.2,
            [("skip", Skip.MISSED, T, 10, T + 540), ("start", T + 600, "schedule")],
        ),
    ],
)
def test_collapse(spec, slots, now, expected):
    assert kinds(collapse(job(**spec), slots, now, "the daemon was not running", False, UTC)) == expected


def test_collapse_says_why_and_how_many():
    [skip, _] = collapse(job(), [T, T + 60, T + 120], T + 120, "the machine was suspended for 2m", False, UTC)
    assert skip.reason == (
        "missed 2 fire(s) between 2026-09-21T14:14:00.000Z and 2026-09-21T14:15:00.000Z: "
        "the machine was suspended for 2m"
    )
    [late] = collapse(job(catch_up=False), [T], T + 400, "the scheduler fired late", False, UTC)
    assert late.reason.endswith("catch_up = false and the latest is 6m40s late")
    [more, _] = collapse(job(), [T, T + 60], T + 60, "asleep", True, UTC)
    assert more.reason.startswith("missed more than 1 fire(s)")


FIRE = Fire("j", T, "schedule")


@pytest.mark.parametrize(
    "spec, busy, capacity, expected",
    [
        # room: start
        ({}, Busy(), 8, [("start", T, "schedule")]),
        # the job's one instance is busy, overlap = skip
        ({}, Busy(job_runs=(7,), total=1), 8, [("skip", Skip.OVERLAP, T, 1, None)]),
        # max_instances = 2 leaves room for a second
        ({"max_instances": 2}, Busy(job_runs=(7,), total=1), 8, [("start", T, "schedule")]),
        # overlap = queue: the fire is held ...
        ({"overlap": "queue"}, Busy(job_runs=(7,), total=1), 8, [("hold", T)]),
        # ... unless one is held already
        (
            {"overlap": "queue"},
            Busy(job_runs=(7,), total=1, queued=True),
            8,
            [("skip", Skip.QUEUE_FULL, T, 1, None)],
        ),
        # overlap = replace: the oldest live run is cancelled, the new one starts
        (
            {"overlap": "replace"},
            Busy(job_runs=(7, 9), total=2),
            8,
            [("replace", 7), ("start", T, "schedule")],
        ),
        # replace at capacity: the replaced run frees its place
        ({"overlap": "replace"}, Busy(job_runs=(7,), total=2), 2, [("replace", 7), ("start", T, "schedule")]),
        # capacity: other jobs' runs fill it
        ({}, Busy(total=2), 2, [("skip", Skip.CAPACITY, T, 1, None)]),
        # leaked threads hold places too
        ({}, Busy(total=1, leaked=1), 2, [("skip", Skip.CAPACITY, T, 1, None)]),
        # a stopping daemon starts nothing
        ({}, Busy(stopping=True), 8, [("skip", Skip.STOPPING, T, 1, None)]),
    ],
)
def test_admit(spec, busy, capacity, expected):
    assert kinds(admit(job(**spec), FIRE, busy, capacity)) == expected


def test_admit_reasons_name_the_limit():
    [skip] = admit(job(), FIRE, Busy(job_runs=(7,), total=1), 8)
    assert skip.reason == "overlap: 1 run(s) of j live (max_instances = 1)"
    [skip] = admit(job(), FIRE, Busy(total=3, leaked=1), 4)
    assert skip.reason == "capacity: 3 runs live and 1 leaked thread(s) (max_concurrent_runs = 4)"
    [replace, _] = admit(job(overlap="replace"), Fire("j", T, "manual"), Busy(job_runs=(7,), total=1), 8)
    assert replace == Replace(7, "replaced by a newer run (manual)")
