"""What a due slot becomes: decide, then apply.

APScheduler only says *when* slots are due. ``collapse`` and ``admit`` decide, as pure
functions of the job, its due slots, the time and what is live: several due slots collapse
to the latest (the rest summed up in one skipped row); a late slot runs as an ordinary run
within `misfire_grace`, else once as a `catchup` run (or is skipped with `catch_up = false`);
a fire finding the job busy follows its `overlap` policy; a fire beyond
`max_concurrent_runs` is skipped. ``Slots`` applies the actions (its ``_apply`` is the only
code here that writes) and keeps what waits: one queued fire per job, pending retries, and
slots the database refused. Nothing here waits on a run: a start starts a thread and returns.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace

from beaconlite import clock, journal, store
from beaconlite.config import Config, JobSpec
from beaconlite.cron import due_slots, parse_schedule
from beaconlite.durations import format_duration
from beaconlite.errors import Paused, RunCancelled, SlotTaken, WriteFailed
from beaconlite.render import iso
from beaconlite.runner import RunEnd, Runner
from beaconlite.statuses import FAILURES, SKIPPED

log = logging.getLogger(__name__)

RETRY_HORIZON = 86400.0  # a dead node's retries are looked for this long after they were due
UNCLAIMED_CAP = 1000  # slots a housekeeping pass looks at per job (a 1 s job: 16 minutes)
SLOT_EPSILON = 0.001  # a row's slot and the schedule's are the same float; this is only slack


class Skip(enum.Enum):
    """Why a fire became a skipped row."""

    MISSED = "missed"  # one of several due slots, not the latest
    LATE = "late"  # past misfire_grace, and catch_up = false
    OVERLAP = "overlap"  # max_instances reached, overlap = "skip"
    QUEUE_FULL = "queue full"  # overlap = "queue", and a fire is already held
    CAPACITY = "capacity"  # max_concurrent_runs reached (leaked threads count)
    STOPPING = "stopping"  # the daemon is stopping
    DROPPED = "dropped"  # a held fire or a pending retry at a stop, a pause or a reload


@dataclass(frozen=True)
class Fire:
    job: str
    slot: float
    trigger: str  # "schedule" | "catchup" | "manual" | "retry"
    attempt: int = 1
    follows: tuple[int, str] | None = None  # a retry's previous attempt: (run id, status)

    @property
    def honours_pause(self) -> bool:
        """A paused job owes nothing; a manual run of it still runs."""
        return self.trigger != "manual"


@dataclass(frozen=True)
class Busy:
    """What is live when a fire is decided."""

    job_runs: tuple[int, ...] = ()  # the job's live runs (not already aborting), oldest first
    total: int = 0  # live runs of every job (not already aborting)
    leaked: int = 0  # stuck threads: each holds a place all the same
    queued: bool = False  # a fire of this job is held
    stopping: bool = False
    remote: tuple[int, ...] = ()  # those of job_runs live on other nodes of a cluster


@dataclass(frozen=True)
class Start:
    fire: Fire


@dataclass(frozen=True)
class SkipRow:
    fire: Fire  # the (first) slot it stands for
    why: Skip
    reason: str
    slots: int = 1
    last_slot: float | None = None


@dataclass(frozen=True)
class Hold:
    fire: Fire
    busy: str


@dataclass(frozen=True)
class Replace:
    run_id: int
    reason: str


Action = Start | SkipRow | Hold | Replace


# -- deciding ---------------------------------------------------------------------------------


def collapse(job: JobSpec, slots: list[float], now: float, why_late: str, more: bool, tz) -> list[Action]:
    """Due slots of one job (oldest first): the latest may run, the others are one skip.

    ``more``: there were more due slots than listed (a long gap); the skip says so.
    """
    latest, late = slots[-1], now - slots[-1]
    if late <= job.misfire_grace:
        trigger = "schedule"
    elif job.catch_up:
        trigger = "catchup"
    else:
        trigger = None
    actions: list[Action] = []
    missed = slots[:-1] if trigger else slots
    if missed:
        last = missed[-1]
        if len(slots) > 1:  # APScheduler thins a long run of slots: count them here
            every, capped = due_slots(parse_schedule(job.schedule), tz, slots[0] - 0.001, slots[-1])
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
        actions.append(
            SkipRow(
                Fire(job.name, missed[0], "schedule"),
                Skip.MISSED if trigger else Skip.LATE,
                f"missed {count} fire(s) {span}: {why_late}{tail}",
                slots=len(missed),
                last_slot=last,
            )
        )
    if trigger:
        actions.append(Start(Fire(job.name, latest, trigger)))
    return actions


def admit(job: JobSpec, fire: Fire, busy: Busy, max_concurrent: int) -> list[Action]:
    """One fire, by the job's overlap policy and the daemon's capacity."""
    if busy.stopping:
        return [SkipRow(fire, Skip.STOPPING, "the daemon is stopping")]
    actions: list[Action] = []
    total = busy.total
    if len(busy.job_runs) >= job.max_instances:
        what = f"{len(busy.job_runs)} run(s) of {job.name} live (max_instances = {job.max_instances})"
        if job.overlap == "skip":
            return [SkipRow(fire, Skip.OVERLAP, f"overlap: {what}")]
        if job.overlap == "queue":
            if busy.queued:
                return [SkipRow(fire, Skip.QUEUE_FULL, f"overlap: {what} and a fire is already queued")]
            return [Hold(fire, what)]
        actions.append(Replace(busy.job_runs[0], f"replaced by a newer run ({fire.trigger})"))
        if busy.job_runs[0] not in busy.remote:
            total -= 1
    if total + busy.leaked >= max_concurrent:
        held = f" and {busy.leaked} leaked thread(s)" if busy.leaked else ""
        reason = f"capacity: {total} runs live{held} (max_concurrent_runs = {max_concurrent})"
        return [*actions, SkipRow(fire, Skip.CAPACITY, reason)]
    return [*actions, Start(fire)]


# -- applying -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What became of a fire."""

    run_id: int | None = None  # the run started, or the skipped row recorded
    skipped: Skip | None = None
    reason: str | None = None
    queued: bool = False
    taken: bool = False  # its slot already had a run (a trigger tries the next instant)
    paused: bool = False  # refused: the job is paused (nothing was recorded)


# (job, run id, status, attempts): an outcome to notify about
Notify = Callable[[str, int, str, int], None]


class Slots:
    def __init__(self, config: Config, runner: Runner, notify: Notify | None = None):
        self.config = config
        self.notify = notify  # skipped rows, and the attempt a dropped retry followed
        self.runner = runner
        self.stopping = False
        self._lock = threading.RLock()
        self._queued: dict[str, Fire] = {}  # one held fire per job (overlap = "queue")
        self._retries: list[tuple[float, Fire]] = []  # (due, by elapsed time; the fire)
        # Jobs whose due slots could not be recorded (the database refused writes): the
        # first and last such slot and why. Their later fires wait here too, until the
        # tick's recover_unrecorded() accounts for all of them as for downtime.
        self._unrecorded: dict[str, tuple[float, float, str]] = {}
        self._to_drop: list[tuple[Fire, str]] = []  # drops the database refused: (fire, why)
        self._unclaimed_checked: dict[str, float] = {}  # job -> slots up to here looked at (cluster)

    def reconfigure(self, config: Config) -> None:
        with self._lock:
            self.config = config

    # -- due slots ------------------------------------------------------------------------

    def fire(self, job_name: str, slots: list[float], now: float, why_late: str, more: bool = False) -> None:
        """Due slots of one job (oldest first), from APScheduler or a recovery.

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
                mark = max(store.last_started_slot(job.name) or 0.0, store.resumed_at(job.name) or 0.0)
                slots = [s for s in slots if s > mark]
            if slots:
                self._due(job, slots, now, why_late, more)

    def _due(self, job: JobSpec, slots: list[float], now: float, why_late: str, more: bool) -> None:
        for action in collapse(job, slots, now, why_late, more, job.zone()):
            try:
                if isinstance(action, Start):
                    self._admit(job, action.fire, now)
                else:
                    self._apply(job, action, now)
            except WriteFailed as e:
                # A refused skip leaves every slot to account for; a refused start (its skip
                # landed), only the latest.
                self._defer(job.name, [action.fire.slot] if isinstance(action, Start) else slots, e.cause)
                return

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
                slots, more = due_slots(parse_schedule(job.schedule), job.zone(), first - 0.001, until)
                mark = max(store.last_started_slot(job.name) or 0.0, store.resumed_at(job.name) or 0.0)
                reason = f"the database was not writable: {cause}"
                if store.is_postgres():
                    # Peers may have run later slots meanwhile, past which the ledger mark
                    # moved: an earlier slot none of them recorded is skipped on its own.
                    try:
                        self._skip_unrecorded(job, [s for s in slots if s <= mark], reason, now)
                    except WriteFailed as e:
                        self._defer(job.name, [first, last], e.cause)
                        return
                slots = [s for s in slots if s > mark]
                if slots:
                    self._due(job, slots, now, reason, more)
                if name in self._unrecorded:  # refused again: the next tick tries again
                    return

    def has_unrecorded(self) -> bool:
        return bool(self._unrecorded)

    def recover_missed(self, now: float, why: str, since: float | None = None) -> None:
        """Each job's slots missed since its ledger mark (the last slot dealt with), or since
        ``since`` for a job that never ran (None: a job that never ran missed nothing)."""
        jobs = [job for job in self.config.jobs if job.schedule and job.enabled]
        marks = store.ledger_marks([job.name for job in jobs])
        for job in jobs:
            mark = marks[job.name] or since
            if mark is None:
                continue
            slots, more = due_slots(parse_schedule(job.schedule), job.zone(), mark, now)
            if slots:
                self.fire(job.name, slots, now, why, more)

    def record_unclaimed(self, now: float, since: float) -> None:
        """A cluster's housekeeping: a slot no node claimed within misfire_grace (every node
        was at capacity) is recorded once, as skipped. Looked for since the last look (at
        first since ``since``, the daemon's start: earlier slots are the downtime rule's)."""
        reason = "unclaimed: every node was at capacity (max_concurrent_runs) through misfire_grace"
        for job in self.config.jobs:
            if not job.schedule or not job.enabled:
                continue
            after = self._unclaimed_checked.get(job.name, since)
            until = now - job.misfire_grace
            if until <= after:
                continue
            slots, more = due_slots(parse_schedule(job.schedule), job.zone(), after, until, cap=UNCLAIMED_CAP)
            self._skip_unrecorded(job, slots, reason, now)
            self._unclaimed_checked[job.name] = slots[-1] if more else until  # the rest next time

    def _skip_unrecorded(self, job: JobSpec, slots: list[float], reason: str, now: float) -> None:
        """Each of ``slots`` that no row covers yet, recorded as skipped (a row of its own:
        rows of other slots lie between them). A paused job owes nothing, nor do the slots
        before it was last resumed."""
        resumed = store.resumed_at(job.name) or 0.0
        slots = [slot for slot in slots if slot > resumed]
        if not slots:
            return
        covered = store.nodes.recorded_slots(job.name, slots[0], slots[-1])
        for slot in slots:
            if any(first - SLOT_EPSILON <= slot <= last + SLOT_EPSILON for first, last in covered):
                continue
            try:
                run_id = store.record_skipped(job.name, slot, reason, now, honour_pause=True)
            except Paused:
                return
            self._housekeeping_skip(job, reason, run_id)

    def record_owed_retries(self, now: float) -> None:
        """A cluster's housekeeping: a dead node's pending retries (kept in its memory, lost
        with it) are recorded by a peer, once, as skipped attempts."""
        horizon = max((job.retry_delay for job in self.config.jobs), default=0.0) + RETRY_HORIZON
        for run in store.nodes.owed_retries(now - horizon, FAILURES):
            job = self.config.job(run.job)
            if job is None or run.status not in job.retry_on or run.attempt > job.retries:
                continue
            reason = f"retry of run {run.id} dropped: node {run.instance_id}, which owed it, is dead"
            skipped = store.record_skipped(
                job.name, run.scheduled_at, reason, now, trigger="retry", attempt=run.attempt + 1
            )
            self._housekeeping_skip(job, reason, skipped)

    @staticmethod
    def _housekeeping_skip(job: JobSpec, reason: str, run_id: int | None) -> None:
        if run_id is not None:  # None: a peer recorded it first
            event = {"event": "run.skipped", "job": job.name, "run_id": run_id, "status": SKIPPED}
            log.warning("%s: skipped: %s", job.name, reason, extra=event)

    # -- one fire -------------------------------------------------------------------------

    def _busy(self, job: JobSpec) -> Busy:
        mine, total = self.runner.occupancy(job.name)
        return Busy(
            job_runs=tuple(mine),
            total=total,
            leaked=self.runner.leaked_threads(),
            queued=job.name in self._queued,
            stopping=self.stopping,
        )

    def start(self, fire: Fire, now: float) -> Outcome:
        """One fire now, by its job's overlap policy and the daemon's capacity."""
        job = self.config.job(fire.job)
        if job is None:
            return Outcome(reason=f"no job named {fire.job!r}")
        return self._admit(job, fire, now)

    def _admit(self, job: JobSpec, fire: Fire, now: float) -> Outcome:
        cluster = store.is_postgres()
        with self._lock, store.batch() if cluster else nullcontext():
            busy = self._busy(job)
            if cluster:
                # Under the job's lock in the database, with every node's live runs of it.
                claim = store.nodes.claim(job.name, fire.slot, fire.attempt, self.runner.instance_id)
                if claim.taken:
                    return Outcome(taken=True, reason="this slot already has a run")
                mine = busy.job_runs
                busy = replace(busy, job_runs=tuple(sorted(mine + claim.others)), remote=claim.others)
            actions = admit(job, fire, busy, self.config.daemon.max_concurrent_runs)
            outcome = Outcome()
            for action in actions:
                if (
                    cluster
                    and isinstance(action, SkipRow)
                    and action.why is Skip.CAPACITY
                    and fire.trigger != "manual"
                ):
                    # A node at capacity does not claim: a peer with room may take the slot
                    # (the housekeeper records it if none does within misfire_grace).
                    log.info(
                        "%s: %s; slot %s left to the other nodes", job.name, action.reason, iso(fire.slot)
                    )
                    return Outcome(skipped=Skip.CAPACITY, reason=action.reason)
                outcome = self._apply(job, action, now)
            return outcome

    def trigger(self, job: JobSpec, requested_at: float) -> Outcome:
        """A manual run; its slot is the request time (nudged if another took that instant)."""
        for nudge in range(10):
            outcome = self._admit(job, Fire(job.name, requested_at + nudge / 1000, "manual"), clock.wall())
            if not outcome.taken:
                return outcome
        return outcome

    def _apply(self, job: JobSpec, action: Action, now: float) -> Outcome:
        """The one writer: WriteFailed when the database refuses."""
        try:
            return self._write(job, action, now)
        except Paused:
            log.debug("%s: paused: %s not recorded", job.name, type(action).__name__)
            return Outcome(paused=True, reason="the job is paused")

    def _write(self, job: JobSpec, action: Action, now: float) -> Outcome:
        if isinstance(action, Start):
            fire = action.fire
            try:
                started = self.runner.start(job, fire.trigger, fire.slot, fire.attempt, fire.honours_pause)
            except SlotTaken:
                log.info("%s: slot %s attempt %d already has a run", job.name, iso(fire.slot), fire.attempt)
                return Outcome(taken=True, reason="this slot already has a run")
            store.if_lost(lambda cause: self._lost(job.name, [fire.slot], cause))
            return Outcome(started.run_id)
        if isinstance(action, SkipRow):
            fire = action.fire
            run_id = store.record_skipped(
                job.name,
                fire.slot,
                action.reason,
                now,
                fire.trigger,
                fire.attempt,
                action.slots,
                action.last_slot,
                honour_pause=fire.honours_pause and action.why is not Skip.DROPPED,
            )
            slots = [fire.slot, action.last_slot or fire.slot]
            store.if_lost(lambda cause: self._lost(job.name, slots, cause))
            store.on_commit(lambda: self._skipped(job, action, run_id))
            return Outcome(run_id, action.why, action.reason)
        if isinstance(action, Hold):
            self._queued[job.name] = action.fire
            log.info(
                "%s: %s; fire of %s queued",
                job.name,
                action.busy,
                iso(action.fire.slot),
                extra={"event": "run.queued", "job": job.name},
            )
            return Outcome(queued=True)
        if not self.runner.abort(action.run_id, RunCancelled, action.reason) and store.is_postgres():
            store.add_request("cancel", now, run_id=action.run_id)  # another node runs it
        return Outcome()

    def _skipped(self, job: JobSpec, action: SkipRow, run_id: int | None) -> None:
        fire = action.fire
        if run_id is not None and self.notify is not None:
            self.notify(job.name, run_id, SKIPPED, 1)
        if action.why is Skip.DROPPED and fire.follows and self.notify is not None:
            self.notify(job.name, *fire.follows, fire.attempt - 1)  # the outcome it was to retry
        log.info(
            "%s: skipped: %s",
            job.name,
            action.reason,
            extra={"event": "run.skipped", "job": job.name, "run_id": run_id, "status": SKIPPED},
        )

    def _lost(self, job: str, slots: list[float], cause: str) -> None:
        """A batch of fires did not commit: its slots wait as unrecorded ones."""
        with self._lock:
            self._defer(job, slots, cause)

    # -- after a run ----------------------------------------------------------------------

    def on_end(self, end: RunEnd) -> bool:
        """A run ended (any thread): schedule its retry, release the job's queued fire.
        True when it will be retried (its outcome is not the job's yet: notify nothing)."""
        retried = False
        with self._lock:
            job = self.config.job(end.job)
            if job is None or self.stopping:
                return False
            if end.status in job.retry_on and end.attempt <= job.retries:
                retry = Fire(job.name, end.scheduled_at, "retry", end.attempt + 1, (end.run_id, end.status))
                self._retries.append((clock.elapsed() + job.retry_delay, retry))
                retried = True
                log.info(
                    "%s: attempt %d %s; retry in %s",
                    job.name,
                    end.attempt,
                    end.status,
                    format_duration(job.retry_delay),
                    extra={"event": "run.retry", "job": job.name},
                )
            queued = self._queued.pop(job.name, None)
        if queued is not None:
            try:
                self._start_or_drop(job, queued, clock.wall())
            except WriteFailed:
                with self._lock:  # the database refused: hold it for the next run's end
                    self._queued.setdefault(job.name, queued)
        return retried

    def _start_or_drop(self, job: JobSpec, fire: Fire, now: float) -> None:
        """A held fire or a retry whose time came: started, or dropped if the job is paused."""
        if self._admit(job, fire, now).paused:
            self._drop(job, fire, "paused", now)

    def tick(self, now: float) -> None:
        """Start the retries that are due (one the database refused waits for the next tick)."""
        with self._lock:
            elapsed = clock.elapsed()
            due = [(at, f) for at, f in self._retries if at <= elapsed]
            self._retries = [(at, f) for at, f in self._retries if at > elapsed]
        for index, (_, fire) in enumerate(due):
            job = self.config.job(fire.job)
            if job is None:
                continue
            try:
                self._start_or_drop(job, fire, now)
            except WriteFailed:
                with self._lock:
                    self._retries += due[index:]
                raise

    def _drop(self, job: JobSpec, fire: Fire, reason: str, now: float) -> None:
        """A held fire or pending retry that will not start: a skipped row saying why."""
        what = "pending retry" if fire.trigger == "retry" else "queued fire"
        self._apply(job, SkipRow(fire, Skip.DROPPED, f"{what} dropped: {reason}"), now)

    def drop_waiting(self, jobs: set[str], reason: str, now: float) -> None:
        """Held fires and pending retries of these jobs (paused, or gone in a reload)."""
        with self._lock:
            waiting = [f for name, f in self._queued.items() if name in jobs]
            waiting += [f for _, f in self._retries if f.job in jobs]
            self._queued = {name: f for name, f in self._queued.items() if name not in jobs}
            self._retries = [(at, f) for at, f in self._retries if f.job not in jobs]
        with self._lock:
            self._to_drop += [(fire, reason) for fire in waiting]
        self.drop_refused(now)

    def drop_refused(self, now: float) -> None:
        """Write the drops the database refused so far (each tick, until they land)."""
        with self._lock:
            todo, self._to_drop = self._to_drop, []
        for index, (fire, reason) in enumerate(todo):
            job = self.config.job(fire.job) or JobSpec(name=fire.job, kind="python")  # gone in a reload
            try:
                self._drop(job, fire, reason, now)
            except WriteFailed:
                with self._lock:
                    self._to_drop = todo[index:] + self._to_drop
                raise

    def waiting_jobs(self) -> set[str]:
        with self._lock:
            return set(self._queued) | {f.job for _, f in self._retries}

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
            job = self.config.job(fire.job) or JobSpec(name=fire.job, kind="python")
            try:
                self._drop(job, fire, reason, now)
            except WriteFailed:
                what = "pending retry" if fire.trigger == "retry" else "queued fire"
                refused.append(
                    journal.skip_entry(
                        job.name, fire.slot, f"{what} dropped: {reason}", now, fire.trigger, fire.attempt
                    )
                )
        return refused
