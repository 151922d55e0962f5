"""What a due slot becomes: a run, a catch-up run, a queued fire, a retry, or a skipped row.

APScheduler only says *when* slots are due. Here: several due slots of a job collapse to
the latest (the rest summed up in one skipped row); a late slot runs as an ordinary run
within `misfire_grace`, else once as a `catchup` run (or is skipped with `catch_up = false`);
a fire finding the job busy follows its `overlap` policy; a fire beyond
`max_concurrent_runs` is skipped; a failed run gets its retries. Nothing here ever waits on
a run: a fire starts a thread and returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from beaconlite import clock, journal, store
from beaconlite.config import Config, JobSpec, resolve_timezone
from beaconlite.cron import due_slots, parse_schedule
from beaconlite.durations import format_duration
from beaconlite.errors import RunCancelled, SlotTaken, WriteFailed
from beaconlite.render import iso
from beaconlite.runner import LiveRun, Runner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fire:
    job: str
    slot: float
    trigger: str
    attempt: int = 1


@dataclass(frozen=True)
class Outcome:
    """What became of a fire: a run id, and a reason when it did not start."""

    run_id: int | None
    skipped: str | None = None
    queued: bool = False


class Dispatcher:
    def __init__(
        self, config: Config, runner: Runner, on_skip: Callable[[str, int, str], None] | None = None
    ):
        self.config = config
        self.on_skip = on_skip  # (job, run id, "skipped"): notifications
        self.tz = resolve_timezone(config.daemon.timezone)
        self.runner = runner
        self.stopping = False
        self._lock = threading.RLock()
        self._queued: dict[str, Fire] = {}  # one held fire per job (overlap = "queue")
        self._retries: list[tuple[float, Fire]] = []  # (due, by elapsed time; the fire)
        # Jobs whose due slots could not be recorded (the database refused writes): the
        # first and last such slot and why. Their later fires wait here too, until the
        # tick's recover_unrecorded() accounts for all of them as for downtime.
        self._unrecorded: dict[str, tuple[float, float, str]] = {}

    def reconfigure(self, config: Config) -> None:
        with self._lock:
            self.config = config
            self.tz = resolve_timezone(config.daemon.timezone)

    # -- slots ----------------------------------------------------------------------------

    def fire(self, job_name: str, slots: list[float], now: float, why_late: str, more: bool = False) -> None:
        """Due slots of one job (oldest first): the latest may run, the rest are skipped.

        Slots at or before the last one started are already dealt with: after a suspend both
        APScheduler and the daemon's own recovery deliver them, and only the first counts.
        """
        with self._lock:
            job = self.config.job(job_name)
            if job is None or not job.enabled or self.stopping:
                return
            if store.outage.active or job.name in self._unrecorded:
                self._defer(job.name, slots, store.outage.cause or "the database refused a write")
                return
            if len(slots) > 1:  # one on-time slot needs no look-up: its run row is unique
                started = store.last_started_slot(job.name)
                slots = [s for s in slots if started is None or s > started]
            if slots:
                self._fire(job, slots, now, why_late, more)

    def _defer(self, job: str, slots: list[float], cause: str) -> None:
        first, last = slots[0], slots[-1]
        known = self._unrecorded.get(job)
        if known is not None:
            first, last, cause = min(first, known[0]), max(last, known[1]), known[2]
        self._unrecorded[job] = (first, last, cause)
        log.debug("%s: slot %s not recorded yet: %s", job, iso(slots[-1]), cause)

    def recover_unrecorded(self, now: float) -> None:
        """Account for the slots that came due while no write could land, as for downtime:
        the latest may run, the others are one skipped row per job naming the real cause."""
        with self._lock:  # no fire of these jobs slips in between (it would move the ledger)
            for name, (first, last, cause) in sorted(self._unrecorded.items()):
                job = self.config.job(name)
                del self._unrecorded[name]
                if job is None or not job.enabled or not job.schedule:
                    continue
                until = max(now, last, clock.wall())  # a fire deferred after `now` was read
                slots, more = due_slots(parse_schedule(job.schedule), self.tz, first - 0.001, until)
                started = store.last_started_slot(job.name)
                slots = [s for s in slots if started is None or s > started]
                if slots:
                    self._fire(job, slots, now, f"the database was not writable: {cause}", more)
                if name in self._unrecorded:  # refused again: the next tick tries again
                    return

    def has_unrecorded(self) -> bool:
        return bool(self._unrecorded)

    def _fire(self, job: JobSpec, slots: list[float], now: float, why_late: str, more: bool) -> None:
        latest, late = slots[-1], now - slots[-1]
        if late <= job.misfire_grace:
            trigger = "schedule"
        elif job.catch_up:
            trigger = "catchup"
        else:
            trigger = None
        missed = slots[:-1] if trigger else slots
        if missed:
            last = missed[-1]
            if len(slots) > 1:  # APScheduler thins a long run of slots: count them here
                every, capped = due_slots(parse_schedule(job.schedule), self.tz, slots[0] - 0.001, slots[-1])
                if capped:  # "more than 100000 ... between the first and the latest"
                    more, missed, last = True, every, slots[-1]
                else:
                    missed = every[:-1] if trigger else every
                    last = missed[-1]
            count = f"more than {len(missed)}" if more else str(len(missed))
            span = (
                f"at {iso(missed[0])}"
                if len(missed) == 1 and not more
                else f"between {iso(missed[0])} and {iso(last)}"
            )
            tail = "" if trigger else f"; catch_up = false and the latest is {format_duration(late)} late"
            reason = f"missed {count} fire(s) {span}: {why_late}{tail}"
            try:
                self._skip(job, missed[0], reason, now, slots=len(missed), last_slot=last)
            except WriteFailed as e:
                self._defer(job.name, slots, e.cause)
                return
        if trigger:
            try:
                self.start(Fire(job.name, latest, trigger), now)
            except WriteFailed as e:
                self._defer(job.name, [latest], e.cause)

    def recover_missed(self, now: float, why: str, since: float | None = None) -> None:
        """Each job's slots missed since its ledger mark (the last slot dealt with), or since
        ``since`` for a job that never ran (None: a job that never ran missed nothing)."""
        for job in self.config.jobs:
            if not (job.schedule and job.enabled):
                continue
            mark = store.ledger_mark(job.name) or since
            if mark is None:
                continue
            slots, more = due_slots(parse_schedule(job.schedule), self.tz, mark, now)
            if slots:
                self.fire(job.name, slots, now, why, more)

    # -- starting -------------------------------------------------------------------------

    def start(self, fire: Fire, now: float) -> Outcome:
        """Start a fire now, by the job's overlap policy and the daemon's capacity."""
        with self._lock:
            job = self.config.job(fire.job)
            if job is None:
                return Outcome(None, f"no job named {fire.job!r}")
            if self.stopping:
                return self._skip(job, fire.slot, "the daemon is stopping", now, fire)
            live = [r for r in self.runner.live_runs() if r.aborted is None]
            mine = sorted((r for r in live if r.job.name == job.name), key=lambda r: r.run_id)
            if len(mine) >= job.max_instances:
                busy = f"{len(mine)} run(s) of {job.name} live (max_instances = {job.max_instances})"
                if job.overlap == "skip":
                    return self._skip(job, fire.slot, f"overlap: {busy}", now, fire)
                if job.overlap == "queue":
                    if job.name in self._queued:
                        return self._skip(
                            job, fire.slot, f"overlap: {busy} and a fire is already queued", now, fire
                        )
                    self._queued[job.name] = fire
                    log.info(
                        "%s: %s; fire of %s queued",
                        job.name,
                        busy,
                        iso(fire.slot),
                        extra={"event": "run.queued", "job": job.name},
                    )
                    return Outcome(None, queued=True)
                mine[0].abort(RunCancelled, f"replaced by a newer run ({fire.trigger})")
                live.remove(mine[0])
            leaked = self.runner.leaked_threads()  # a stuck thread holds a place all the same
            if len(live) + leaked >= self.config.daemon.max_concurrent_runs:
                held = f" and {leaked} leaked thread(s)" if leaked else ""
                return self._skip(
                    job,
                    fire.slot,
                    f"capacity: {len(live)} runs live{held} "
                    f"(max_concurrent_runs = {self.config.daemon.max_concurrent_runs})",
                    now,
                    fire,
                )
            try:
                started = self.runner.start(job, fire.trigger, fire.slot, fire.attempt)
            except SlotTaken:
                log.info("%s: slot %s attempt %d already has a run", job.name, iso(fire.slot), fire.attempt)
                return Outcome(None, "this slot already has a run")
            return Outcome(started.run_id)

    def trigger(self, job: JobSpec, requested_at: float) -> Outcome:
        """A manual run; its slot is the request time (nudged if another took that instant)."""
        for nudge in range(10):
            outcome = self.start(Fire(job.name, requested_at + nudge / 1000, "manual"), clock.wall())
            if outcome.skipped != "this slot already has a run":
                return outcome
        return outcome

    def _skip(
        self,
        job: JobSpec,
        slot: float,
        reason: str,
        now: float,
        fire: Fire | None = None,
        slots: int = 1,
        last_slot: float | None = None,
    ) -> Outcome:
        """Record a skipped row (WriteFailed when the database refuses it)."""
        trigger, attempt = (fire.trigger, fire.attempt) if fire else ("schedule", 1)
        run_id = store.record_skipped(job.name, slot, reason, now, trigger, attempt, slots, last_slot)
        if run_id is not None and self.on_skip is not None:
            self.on_skip(job.name, run_id, "skipped")
        log.info(
            "%s: skipped: %s",
            job.name,
            reason,
            extra={"event": "run.skipped", "job": job.name, "run_id": run_id, "status": "skipped"},
        )
        return Outcome(run_id, reason)

    # -- after a run ----------------------------------------------------------------------

    def on_end(self, live: LiveRun, status: str) -> None:
        """A run ended (any thread): schedule its retry, release the job's queued fire."""
        with self._lock:
            job = self.config.job(live.job.name)
            if job is None or self.stopping:
                return
            if status in job.retry_on and live.attempt <= job.retries:
                retry = Fire(job.name, live.scheduled_at, "retry", live.attempt + 1)
                self._retries.append((clock.elapsed() + job.retry_delay, retry))
                log.info(
                    "%s: attempt %d %s; retry in %s",
                    job.name,
                    live.attempt,
                    status,
                    format_duration(job.retry_delay),
                    extra={"event": "run.retry", "job": job.name},
                )
            queued = self._queued.pop(job.name, None)
        if queued is not None:
            try:
                self.start(queued, clock.wall())
            except WriteFailed:
                with self._lock:  # the database refused: hold it for the next run's end
                    self._queued.setdefault(job.name, queued)

    def tick(self, now: float) -> None:
        """Start the retries that are due (one the database refused waits for the next tick)."""
        with self._lock:
            elapsed = clock.elapsed()
            due = [(at, f) for at, f in self._retries if at <= elapsed]
            self._retries = [(at, f) for at, f in self._retries if at > elapsed]
        for index, (_, fire) in enumerate(due):
            try:
                self.start(fire, now)
            except WriteFailed:
                with self._lock:
                    self._retries += due[index:]
                raise

    def drop_pending(self, reason: str, now: float) -> list[dict]:
        """At stop: held fires and pending retries do not survive; each becomes a skip.

        Returns journal entries for the skips the database refused.
        """
        with self._lock:
            self.stopping = True
            pending = list(self._queued.values()) + [f for _, f in self._retries]
            self._queued.clear()
            self._retries.clear()
        refused = []
        for fire in pending:
            job = self.config.job(fire.job)
            if job is not None:
                what = "pending retry" if fire.trigger == "retry" else "queued fire"
                try:
                    self._skip(job, fire.slot, f"{what} dropped: {reason}", now, fire)
                except WriteFailed:
                    refused.append(
                        journal.skip_entry(
                            job.name, fire.slot, f"{what} dropped: {reason}", now, fire.trigger, fire.attempt
                        )
                    )
        return refused
