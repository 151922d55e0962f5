"""APScheduler 3, told only *when* slots are due. beaconlite decides what each slot becomes.

APScheduler's own defaults (misfire_grace_time=1 s, coalesce=True, max_instances=1) silently
drop late fires and never tell which slots they stood for. Here every job has
``misfire_grace_time=None`` and ``coalesce=False``, so a late wake-up delivers every due
slot, and a custom executor hands them all to a callback that only *starts* runs and
returns: a hung run can never block APScheduler's pool or its instance count.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from datetime import timezone

from apscheduler.executors.base import BaseExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

from beaconlite.config import JobSpec
from beaconlite.cron import Every, Schedule, parse_schedule

MAX_LISTED = 1000  # due slots APScheduler may list one by one after a gap


class ScheduleTrigger(BaseTrigger):
    """An APScheduler trigger over beaconlite's own (cron(8)-correct) schedules."""

    def __init__(self, schedule: Schedule, tz):
        self.schedule = schedule
        self.tz = tz

    def get_next_fire_time(self, previous_fire_time, now):
        # After a long sleep APScheduler lists every due slot before handing them over: for
        # a short `every`, hundreds of thousands. Jump to the latest due slot instead; the
        # slot policy counts the missed ones from the schedule itself.
        every = self.schedule if isinstance(self.schedule, Every) else None
        gap = (now - previous_fire_time).total_seconds() if previous_fire_time else 0.0
        if every and gap > MAX_LISTED * every.seconds:
            latest = every.latest_at_or_before(now)
            if latest > previous_fire_time:
                return latest
        return self.schedule.next_after(previous_fire_time or now, self.tz)

    def __str__(self):
        return f"beaconlite[{self.schedule}]"


Fires = list[tuple[str, list[float]]]  # (job name, its due slots), of one wake-up


class FireExecutor(BaseExecutor):
    """Collects (job name, due slots) for beaconlite; never runs anything itself."""

    def __init__(self, due: Fires):
        super().__init__()
        self.due = due

    def submit_job(self, job, run_times):
        self.due.append((job.id, [t.timestamp() for t in run_times]))

    def _do_submit_job(self, job, run_times):  # pragma: no cover - submit_job replaces it
        raise NotImplementedError


def _never_called():  # APScheduler wants a callable per job; our executor ignores it
    raise AssertionError("beaconlite's executor does not call job functions")


class _BatchingScheduler(BackgroundScheduler):
    """Hands every due slot of one wake-up to ``on_fires`` at once, holding ``lock``: a
    thousand slots due at the same second are recorded in a few transactions, and every row
    is written before the first of their runs starts its work."""

    def __init__(self, lock: threading.Lock, due: Fires, on_fires: Callable[[Fires], None], **kwargs):
        super().__init__(**kwargs)
        self.lock, self.due, self.on_fires = lock, due, on_fires

    def _process_jobs(self):
        with self.lock:
            began = time.monotonic()
            wait = super()._process_jobs()  # seconds to the next slot from ``began``, or None
            fires = self.due[:]
            self.due.clear()
            if fires:
                self.on_fires(fires)
            # Recording the fires took time the wait was counted from: without this, every
            # wake-up after a busy one would come that much late.
            return None if wait is None else max(0.0, wait - (time.monotonic() - began))


class Scheduler:
    """The APScheduler instance for one daemon."""

    def __init__(self, on_fires: Callable[[Fires], None]):
        self._jobs = MemoryJobStore()  # ours, to ask it for one job or the earliest fire
        self._lock = threading.Lock()  # held through each wake-up
        # Jobs whose next fire time may have moved since changed_fire_times() last looked:
        # each fire moves its job's, a sync those it adds. A tick reads only these, not
        # every job (10,000 of them at one second each would be the daemon's idle load).
        self._moved: set[str] = set()

        def fired(fires: Fires) -> None:
            self._moved.update(name for name, _ in fires)
            on_fires(fires)

        due: Fires = []
        self._aps = _BatchingScheduler(
            self._lock,
            due,
            fired,
            timezone=timezone.utc,
            jobstores={"default": self._jobs},
            executors={"default": FireExecutor(due)},
            job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": sys.maxsize},
        )
        self._specs: dict[str, tuple[str, str]] = {}  # job -> (schedule, timezone)

    def start(self) -> None:
        self._aps.start()

    def shutdown(self) -> None:
        if self._aps.running:
            self._aps.shutdown(wait=False)

    def running(self) -> bool:
        return self._aps.running

    def wakeup(self) -> None:
        """Look for due slots now (after a suspend: APScheduler waits on a monotonic clock)."""
        self._aps.wakeup()

    def sync(self, jobs: tuple[JobSpec, ...]) -> None:
        """Make the scheduled jobs match ``jobs``; unchanged ones keep their next slot."""
        wanted = {j.name: (j.schedule, j.timezone) for j in jobs if j.schedule and j.enabled}
        zones = {j.name: j.zone() for j in jobs}
        for name in list(self._specs):
            if self._specs[name] != wanted.get(name):
                self._aps.remove_job(name)
                del self._specs[name]
        for name, (schedule, _) in wanted.items():
            if name not in self._specs:
                trigger = ScheduleTrigger(parse_schedule(schedule), zones[name])
                self._aps.add_job(_never_called, trigger, id=name, name=name)
                self._specs[name] = wanted[name]
                self._moved.add(name)

    def next_fire_times(self) -> dict[str, float | None]:
        """Every scheduled job's next fire time (at a start or a reload)."""
        with self._lock:  # not half-way through a wake-up: each fired job's time is moved
            self._moved.clear()
            return {job.id: _timestamp(job.next_run_time) for job in self._aps.get_jobs()}

    def changed_fire_times(self) -> dict[str, float | None]:
        """The next fire times that may have moved since the last look (None: no more fires)."""
        with self._lock:
            moved, self._moved = self._moved, set()
            return {
                name: _timestamp(getattr(self._jobs.lookup_job(name), "next_run_time", None))
                for name in moved
            }

    def next_fire(self) -> float | None:
        """The earliest next fire of any job (the job store keeps them in time order)."""
        return _timestamp(self._jobs.get_next_run_time())


def _timestamp(when) -> float | None:
    return when.timestamp() if when else None
