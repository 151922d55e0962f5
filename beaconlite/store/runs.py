"""Writing the ledger: instances and heartbeats, runs and steps (every end a compare-and-set),
CLI requests to the daemon, the published job list, pruning."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from peewee import Case, IntegrityError, Select, ValuesList

from beaconlite.errors import Paused, RunEnded, SlotTaken
from beaconlite.statuses import ABORTED, RUNNING, SKIPPED
from beaconlite.store import nodes
from beaconlite.store.database import db, give_back_free_pages, in_short_writes, in_this_batch, is_postgres
from beaconlite.store.schema import Instance, JobState, Pause, Request, Run, Step, close, write

log = logging.getLogger("beaconlite.store")


def register_instance(kind: str, pid: int, host: str, version: str, orphan_after: float, now: float) -> int:
    with write():
        instance_id = Instance.insert(
            kind=kind,
            pid=pid,
            host=host,
            version=version,
            started_at=now,
            heartbeat_at=now,
            orphan_after=orphan_after,
        ).execute()
        if is_postgres():
            nodes.start_lease(instance_id)
        return instance_id


def heartbeat(instance_id: int, run_ids: Iterable[int], now: float) -> set[int]:
    """The instance's and its live runs' heartbeats, in one short transaction.

    Returns the ids among ``run_ids`` that are no longer running: someone else (the reaper,
    a cancel of an orphan) recorded their end, and their process must stop working on them.
    On PostgreSQL this renews the instance's lease, and raises Fenced when it is gone.
    """
    run_ids = list(run_ids)
    with write():
        if is_postgres():
            nodes.renew_lease(instance_id)
        else:
            Instance.update(heartbeat_at=now).where(Instance.id == instance_id).execute()
        if not run_ids:
            return set()
        Run.update(heartbeat_at=now).where(Run.id.in_(run_ids), Run.status == RUNNING).execute()
        # Rows that exist and ended: a run whose row another transaction of ours has not
        # committed yet (a burst's batch, on PostgreSQL) is invisible here, not ended.
        return {r.id for r in Run.select(Run.id).where(Run.id.in_(run_ids), Run.status != RUNNING)}


def set_leaked_threads(instance_id: int, count: int) -> None:
    with write():
        Instance.update(leaked_threads=count).where(Instance.id == instance_id).execute()


def stop_instance(instance_id: int, now: float) -> None:
    with write():
        Instance.update(stopped_at=now, heartbeat_at=now).where(Instance.id == instance_id).execute()


def start_run(
    job: str,
    trigger: str,
    scheduled_at: float,
    attempt: int,
    deadline_at: float,
    instance_id: int | None,
    now: float,
    honour_pause: bool = False,
) -> int:
    """Insert the run row (status running) before any work; SlotTaken if the slot ran;
    with ``honour_pause``, Paused if the job is paused (checked in the same transaction,
    so no run starts once `pause` has returned)."""
    try:
        with write():
            nodes.require_lease(instance_id)
            if honour_pause:
                _refuse_if_paused(job)
            return _insert(
                Run,
                job=job,
                status=RUNNING,
                trigger=trigger,
                attempt=attempt,
                scheduled_at=scheduled_at,
                started_at=now,
                deadline_at=deadline_at,
                heartbeat_at=now,
                instance_id=instance_id,
                slots=1,
            )
    except IntegrityError:
        raise SlotTaken(f"{job} slot {scheduled_at} attempt {attempt} already has a run") from None


_INSERTS: dict[tuple, tuple[str, list]] = {}  # (model, engine, columns) -> (text, fields in order)


def _insert(model, **values) -> int:
    """``model.insert(**values).execute()``, its text built by peewee once per set of
    columns: a burst writes thousands of rows alike, and building the same text again was
    nine tenths of each row's cost (about 200 of 210 us)."""
    key = (model, type(db.obj), tuple(values))
    known = _INSERTS.get(key)
    if known is None:
        sql, params = model.insert(**values).sql()
        fields = [f for f in model._meta.sorted_fields if f.name in values]
        if params != [f.db_value(values[f.name]) for f in fields]:  # peewee added or reordered
            return model.insert(**values).execute()
        known = _INSERTS[key] = (sql, fields)
    sql, fields = known
    cursor = db.execute_sql(sql, [f.db_value(values[f.name]) for f in fields])
    if " RETURNING " in sql:  # engines that say the new id that way
        return cursor.fetchone()[0]
    return cursor.lastrowid


def record_skipped(
    job: str,
    scheduled_at: float,
    reason: str,
    now: float,
    trigger: str = "schedule",
    attempt: int = 1,
    slots: int = 1,
    last_slot_at: float | None = None,
    honour_pause: bool = False,
) -> int | None:
    """A fire that never started (or ``slots`` missed ones, the first at ``scheduled_at``);
    None when its slot is already recorded; Paused as for start_run."""
    try:
        with write():
            if honour_pause:
                _refuse_if_paused(job)
            return Run.insert(
                job=job,
                status=SKIPPED,
                trigger=trigger,
                attempt=attempt,
                scheduled_at=scheduled_at,
                finished_at=now,
                error=reason,
                slots=slots,
                last_slot_at=last_slot_at if slots > 1 else None,
            ).execute()
    except IntegrityError:
        return None


def _refuse_if_paused(job: str) -> None:
    # Asked inside the write transaction, so no pause lands between the look and the row.
    # A batch holds one transaction for all its rows: one look serves them all.
    paused = in_this_batch(
        "paused", lambda: {p.job for p in Pause.select(Pause.job).where(Pause.resumed_at.is_null())}
    )
    if job in paused:
        raise Paused(job)


def pause_job(job: str, now: float, by: str) -> Pause | None:
    """Pause a job; None when it is paused already (else its new pause)."""
    with write():
        if is_postgres():  # waits for a decision of the job under way on any node
            nodes.lock_job(job)
        current = Pause.get_or_none(Pause.job == job)
        if current is not None and current.resumed_at is None:
            return None
        Pause.insert(job=job, paused_at=now, paused_by=by, resumed_at=None).on_conflict(
            conflict_target=[Pause.job],
            update={Pause.paused_at: now, Pause.paused_by: by, Pause.resumed_at: None},
        ).execute()
    return Pause.get_by_id(job)


def resume_job(job: str, now: float) -> bool:
    """Resume a paused job (its ledger starts again now); False when it was not paused."""
    with write():
        return Pause.update(resumed_at=now).where(Pause.job == job, Pause.resumed_at.is_null()).execute() == 1


def pauses() -> dict[str, Pause]:
    """Every job ever paused: paused now while ``resumed_at`` is null."""
    return {p.job: p for p in Pause.select()}


def paused_jobs() -> dict[str, Pause]:
    return {job: p for job, p in pauses().items() if p.resumed_at is None}


def _ours(run_id: int, instance_id: int | None):
    """In a cluster: the row is still the run this instance started, and the instance holds
    its lease. (A failover to a replica that had not received the last commits can hand a
    lost run's id to a peer's new run: its id alone is not its identity.)"""
    ours = (Run.id == run_id) & nodes.run_owner_alive()
    return ours & (Run.instance_id == instance_id) if instance_id is not None else ours


def _require_live(run_id: int, instance_id: int | None) -> None:
    """RunEnded unless the run is live (and, in a cluster, still ours: a fenced node writes
    nothing more for its runs)."""
    status = run_status(run_id)
    if (
        status == RUNNING
        and is_postgres()
        and not Run.select(Run.id).where(_ours(run_id, instance_id)).exists()
    ):
        status = "fenced"
    if status != RUNNING:
        raise RunEnded(run_id, status)


def start_step(run_id: int, name: str, now: float, instance_id: int | None = None) -> int:
    """A step row under a live run; RunEnded when the run's end is already recorded."""
    with write():
        _require_live(run_id, instance_id)
        return Step.insert(run_id=run_id, name=name, status=RUNNING, started_at=now).execute()


def finish_step(
    run_id: int, step_id: int, status: str, error: str | None, now: float, instance_id: int | None = None
) -> None:
    """End a step of a live run; RunEnded when the run's end is already recorded."""
    with write():
        _require_live(run_id, instance_id)
        Step.update(status=status, error=error, finished_at=now).where(
            Step.id == step_id, Step.status == RUNNING
        ).execute()


def finish_run(
    run_id: int,
    status: str,
    now: float,
    *,
    error: str | None = None,
    summary: str | None = None,
    output: str | None = None,
    duration_s: float | None = None,
    suspended_s: float | None = None,
    steps: Iterable[dict] = (),
    instance_id: int | None = None,
) -> bool:
    """Compare-and-set a live run to its terminal status; False when someone else did first.

    ``summary`` is JSON text. ``steps`` are steps whose rows could not be written while the
    run went on (the database refused them): each dict has the row ``id`` (None when never
    inserted), ``name``, ``status``, ``error``, ``started_at`` and ``finished_at``; they land
    with the run's end. Steps still running end with it: the step in flight takes the run's
    status.
    """
    fields = dict(status=status, finished_at=now, error=error, duration_s=duration_s)
    if summary is not None:
        fields["summary"] = summary
    if output is not None:
        fields["output"] = output
    if suspended_s:
        fields["suspended_s"] = suspended_s
    live = (Run.id == run_id) & (Run.status == RUNNING)
    if is_postgres():
        live &= _ours(run_id, instance_id)  # a fenced node's late end loses, as any late end does
    with write():
        won = Run.update(**fields).where(live).execute() == 1
        if won:
            for step in steps:
                values = {k: step[k] for k in ("status", "error", "started_at", "finished_at")}
                if step["id"] is None:
                    Step.insert(run_id=run_id, name=step["name"], **values).execute()
                else:
                    Step.update(**values).where(Step.id == step["id"], Step.status == RUNNING).execute()
            in_flight = status if status in ABORTED else SKIPPED
            Step.update(status=in_flight, finished_at=now).where(
                Step.run_id == run_id, Step.status == RUNNING
            ).execute()
    return won


def finish_abandoned(run_id: int, status: str, error: str, now: float) -> bool:
    """Finish a run nobody is running any more (orphaned, or its process is gone)."""
    return run_id in finish_abandoned_many([(run_id, error)], status, now)


def finish_abandoned_many(rows: list[tuple[int, str]], status: str, now: float) -> set[int]:
    """Compare-and-set each (run id, reason) to ``status`` in one transaction; the ids won."""
    with write():
        ids = [run_id for run_id, _ in rows]
        won = {r.id for r in Run.select(Run.id).where(Run.id.in_(ids), Run.status == RUNNING)}
        by_reason: dict[str, list[int]] = {}
        for run_id, reason in rows:
            if run_id in won:
                by_reason.setdefault(reason, []).append(run_id)
        for reason, group in by_reason.items():
            Run.update(status=status, finished_at=now, error=reason, duration_s=now - Run.started_at).where(
                Run.id.in_(group), Run.status == RUNNING
            ).execute()
        if won:
            Step.update(status=status, finished_at=now).where(
                Step.run_id.in_(list(won)), Step.status == RUNNING
            ).execute()
    return won


def live_runs(instance_id: int | None = None) -> list[Run]:
    query = Run.select().where(Run.status == RUNNING)
    if instance_id is not None:
        query = query.where(Run.instance_id == instance_id)
    # Sorted here: an ORDER BY id would tempt the planner to walk the whole table in id
    # order rather than the small partial index of live runs.
    return sorted(query, key=lambda run: run.id)


def run_status(run_id: int) -> str | None:
    row = Run.select(Run.status).where(Run.id == run_id).first()
    return row.status if row else None


# Never a slot: as a bound on scheduled_at it makes a job's latest slot a backwards walk of
# (job, scheduled_at, attempt), which (job, status) could not offer.
_FAR_FUTURE = 1e15


def last_started_slot(job: str) -> float | None:
    """The latest slot of a job that started (a slot starts at most once)."""
    row = (
        Run.select(Run.scheduled_at)
        .where(Run.job == job, Run.scheduled_at < _FAR_FUTURE, Run.status != SKIPPED, Run.trigger != "manual")
        .order_by(Run.scheduled_at.desc())
        .first()
    )
    return row.scheduled_at if row else None


def resumed_at(job: str) -> float | None:
    """When the job was last resumed (its slots while paused are owed nothing)."""
    row = Pause.select(Pause.resumed_at).where(Pause.job == job).first()
    return row.resumed_at if row else None


CHUNK = 400  # job names per statement: well inside every engine's parameter limit


def job_name_tables(names: list[str]):
    """The job names as a table ``j(name)`` to join with, a few hundred per statement."""
    for i in range(0, len(names), CHUNK):
        yield ValuesList([(n,) for n in names[i : i + CHUNK]]).cte("j", columns=("name",))


def ledger_marks(names: list[str]) -> dict[str, float | None]:
    """Per job, up to when its slots have been dealt with: the latest slot it started, the
    latest time a skip of it was recorded (a skip row settles every slot due before it),
    or when it was last resumed. One statement per few hundred jobs, each job's two
    look-ups a seek in an index (the start-up and a freeze ask for every job at once)."""
    marks: dict[str, float | None] = {}
    resumed = {p.job: p.resumed_at for p in Pause.select(Pause.job, Pause.resumed_at)}
    for jobs in job_name_tables(names):
        started = (  # as last_started_slot, by (job, scheduled_at, attempt)
            Run.select(Run.scheduled_at)
            .where((Run.job == jobs.c.name) & (Run.scheduled_at < _FAR_FUTURE))
            .where((Run.status != SKIPPED) & (Run.trigger != "manual"))
            .order_by(Run.scheduled_at.desc())
            .limit(1)
        )
        skipped = (  # the newest skip was recorded last, by (job, status)
            Run.select(Run.finished_at)
            .where((Run.job == jobs.c.name) & (Run.status == SKIPPED) & (Run.trigger != "manual"))
            .order_by(Run.id.desc())
            .limit(1)
        )
        query = Select(from_list=[jobs], columns=[jobs.c.name, started, skipped]).with_cte(jobs)
        for name, *found in db.execute(query):
            known = [m for m in (*found, resumed.get(name)) if m is not None]
            marks[name] = max(known) if known else None
    return marks


def add_request(
    kind: str, now: float, job: str | None = None, run_id: int | None = None, node: int | None = None
) -> int:
    """A request for the daemon (``node``: for that instance alone)."""
    with write():
        return Request.insert(kind=kind, job=job, run_id=run_id, created_at=now, node=node).execute()


def take_requests(now: float, me: int | None = None) -> list[Request]:
    """The open requests this daemon is to answer, marked taken by it. On SQLite the daemon
    is their only consumer. In a cluster each is taken by exactly one node: a trigger by
    any, a reload by the node it names, a cancel by the node running the run (by any when
    that node is dead: the run is then recorded cancelled directly)."""
    with write():
        query = Request.select().where(Request.taken_at.is_null()).order_by(Request.id)
        if is_postgres():
            query = query.where(Request.node.is_null() | (Request.node == me)).for_update(
                "FOR UPDATE SKIP LOCKED"
            )
        found = list(query)
        if is_postgres():
            runs = [r.run_id for r in found if r.kind == "cancel" and r.run_id is not None]
            owner = dict(Run.select(Run.id, Run.instance_id).where(Run.id.in_(runs)).tuples()) if runs else {}
            lapsed = nodes.lapsed(owner.values())
            found = [
                r
                for r in found
                if r.kind != "cancel" or owner.get(r.run_id) in (me, None) or owner.get(r.run_id) in lapsed
            ]
        if found:
            mark = Request.update(taken_at=now, taken_by=me).where(
                Request.id.in_([r.id for r in found]), Request.taken_at.is_null()
            )
            if is_postgres():  # what another node took meanwhile is not ours (belt and braces)
                won = {r.id for r in mark.returning(Request.id)}
                found = [r for r in found if r.id in won]
            else:
                mark.execute()
    return found


def answer_request(
    request_id: int,
    run_id: int | None = None,
    queued: bool = False,
    refused: str | None = None,
    detail: str | None = None,
) -> None:
    """Answer a taken request: done (with the run it concerns, or what it did), queued, or
    refused (why)."""
    answer = "refused" if refused is not None else "queued" if queued else "done"
    with write():
        Request.update(answer=answer, result_run_id=run_id, error=refused, detail=detail).where(
            Request.id == request_id
        ).execute()


def get_request(request_id: int) -> Request | None:
    return Request.get_or_none(Request.id == request_id)


def withdraw_request(request_id: int) -> bool:
    """Take back a request the daemon has not taken; False if it already has."""
    with write():
        return Request.delete().where(Request.id == request_id, Request.taken_at.is_null()).execute() == 1


def job_states_of(jobs, fires: dict[str, float | None]) -> list[dict]:
    """The rows the daemon publishes for its jobs (JobSpecs) and their next fire times."""
    return [
        {
            "name": j.name,
            "schedule": j.schedule,
            "enabled": int(j.enabled),
            "next_run_at": fires.get(j.name),
            "timezone": j.timezone,
            "spec": j.digest,
        }
        for j in jobs
    ]


def save_job_states(states: list[dict]) -> None:
    """Replace the daemon's published job list (at start, reload and when a fire time moves)."""
    with write():
        JobState.delete().execute()
        if states:
            JobState.insert_many(states).execute()


def save_fire_times(fires: dict[str, float | None]) -> None:
    """Move the published next fire times of some jobs (after their fires), in one write."""
    names = sorted(fires)
    with write():
        for i in range(0, len(names), CHUNK):
            chunk = names[i : i + CHUNK]
            JobState.update(next_run_at=Case(JobState.name, [(n, fires[n]) for n in chunk])).where(
                JobState.name.in_(chunk)
            ).execute()


def prune_in_background(before: float) -> None:
    """The daemon's daily prune, on a thread of its own (it yields between its batches)."""

    def work():
        try:
            count = prune(before)
            log.info("pruned %d finished run(s) older than keep_history", count, extra={"event": "prune"})
        except Exception:  # a loop boundary: tomorrow's prune tries again
            log.exception("prune failed")
        finally:
            close()

    try:
        threading.Thread(target=work, name="prune", daemon=True).start()
    except RuntimeError as e:
        log.warning("cannot start the prune thread: %s; trying again tomorrow", e)


def prune(before: float, dry_run: bool = False) -> int:
    """Delete finished runs (and steps) that finished before ``before``, in short batches;
    then give the freed space back to the file system, also in short steps."""
    finished = (Run.status != RUNNING) & (Run.finished_at < before)
    if dry_run:
        return Run.select().where(finished).count()

    def delete_oldest(size: int) -> int:
        # The oldest first, by the finished_at index; the same rows for both statements of
        # the transaction (no list of ids to send: building one costs more than deleting).
        doomed = Run.select(Run.id).where(finished).order_by(Run.finished_at).limit(size)
        Step.delete().where(Step.run_id.in_(doomed)).execute()
        return Run.delete().where(Run.id.in_(doomed)).execute()

    total = in_short_writes(delete_oldest, 500)
    if total:
        give_back_free_pages()
    return total
