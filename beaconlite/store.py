"""The run store: peewee models over SQLite, the schema version, and every query by name.

Times are float seconds since the epoch (UTC). Every transition out of "running" is a
compare-and-set (``WHERE status = 'running'``) whose row count says who won. Only the
process holding the daemon lock creates or migrates the schema; readers never do.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from peewee import (
    CharField,
    DatabaseError,
    FloatField,
    IntegerField,
    IntegrityError,
    Model,
    OperationalError,
    SqliteDatabase,
    TextField,
    fn,
)

from beaconlite.errors import SlotTaken, StoreError
from beaconlite.lock import create_private_file

SCHEMA_VERSION = 2
TERMINAL = ("success", "warning", "error", "timeout", "cancelled", "skipped")
FINISHED = ("success", "warning", "error", "timeout", "cancelled")  # terminal, not skipped
OK = ("success", "warning")
PRAGMAS = [("busy_timeout", 10_000), ("synchronous", "normal"), ("foreign_keys", 0)]

db = SqliteDatabase(None)  # one connection per thread (peewee's thread_safe default)
# In-process writers queue here rather than in SQLite's busy handler, which sleeps in
# 1-100 ms steps: with 20 runs finishing while the scheduler starts 20 more, that sleep
# would be the fire lag. Other processes (the CLI) still meet busy_timeout.
_write_lock = threading.Lock()


@contextmanager
def _write():
    """A write transaction: BEGIN IMMEDIATE, so a read-then-write never has to upgrade."""
    with _write_lock, db.atomic("IMMEDIATE"):
        yield


class BaseModel(Model):
    class Meta:
        database = db
        legacy_table_names = False


class Instance(BaseModel):
    """A process that runs jobs: the daemon, or a foreground `beaconlite run`."""

    kind = CharField()  # "daemon" | "foreground"
    pid = IntegerField()
    host = CharField()
    version = CharField()
    started_at = FloatField()
    heartbeat_at = FloatField()
    stopped_at = FloatField(null=True)
    orphan_after = FloatField()
    leaked_threads = IntegerField(default=0)


class Run(BaseModel):
    job = CharField()
    status = CharField()
    trigger = CharField()
    attempt = IntegerField(default=1)
    scheduled_at = FloatField()
    started_at = FloatField(null=True)
    finished_at = FloatField(null=True)
    deadline_at = FloatField(null=True)
    heartbeat_at = FloatField(null=True)
    duration_s = FloatField(null=True)
    instance_id = IntegerField(null=True)
    error = TextField(null=True)
    summary = TextField(null=True)
    output = TextField(null=True)
    suspended_s = FloatField(null=True)

    class Meta:
        indexes = (
            (("job", "scheduled_at", "attempt"), True),  # a slot starts at most once
            (("job", "id"), False),  # history of a job, newest first
            (("job", "status", "id"), False),  # last status / last skip of a job
            (("status", "id"), False),  # runs --status
            (("started_at",), False),  # runs --since
            (("finished_at",), False),  # prune, 24 h counts
        )


# Live runs: the reaper, status and health read them all the time; a partial index keeps
# that lookup independent of the history's size.
Run.add_index(Run.index(Run.instance_id, name="run_live", where=(Run.status == "running")))


class Step(BaseModel):
    run_id = IntegerField(index=True)
    name = CharField()
    status = CharField()
    started_at = FloatField(null=True)
    finished_at = FloatField(null=True)
    error = TextField(null=True)


class Request(BaseModel):
    """A CLI request to the daemon (trigger / cancel), picked up by its tick."""

    kind = CharField()  # "trigger" | "cancel"
    job = CharField(null=True)
    run_id = IntegerField(null=True)
    created_at = FloatField()
    taken_at = FloatField(null=True)
    result_run_id = IntegerField(null=True)
    error = TextField(null=True)


Request.add_index(Request.index(Request.id, name="request_open", where=Request.taken_at.is_null()))


class JobState(BaseModel):
    """What the daemon scheduled, so `status --database` needs no config."""

    name = CharField(primary_key=True)
    schedule = CharField(null=True)
    enabled = IntegerField(default=1)
    next_run_at = FloatField(null=True)

    class Meta:
        table_name = "job"


# Each migration takes the schema from version i to i + 1. A later column change adds a
# step here (playhouse.migrate), never edits an earlier one.
MIGRATIONS = [
    lambda: db.create_tables([Instance, Run, Step]),
    lambda: db.create_tables([Request, JobState]),
]
assert len(MIGRATIONS) == SCHEMA_VERSION


# -- opening ------------------------------------------------------------------------------


def ensure_directory(directory: Path, group_access: bool) -> None:
    if directory.is_dir():
        return  # an existing directory's mode is never changed
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if group_access:
        os.chmod(directory, 0o770 | stat.S_ISGID)
    else:
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask; be exact


def file_mode(group_access: bool) -> int:
    return 0o660 if group_access else 0o600


def _connect(path: Path | str, uri: str | None = None) -> None:
    if not db.is_closed():
        db.close()
    db.init(uri or str(path), pragmas=PRAGMAS, uri=bool(uri), check_same_thread=False, timeout=10)
    try:
        db.connect(reuse_if_open=True)
    except (OperationalError, DatabaseError, sqlite3.Error) as e:
        raise StoreError(f"{path}: cannot open database: {e}") from None


def _schema_version(path: Path) -> int:
    try:
        version = db.execute_sql("PRAGMA user_version").fetchone()[0]
        tables = set(db.get_tables())
    except (OperationalError, DatabaseError) as e:
        raise StoreError(f"{path}: not a usable beaconlite database: {e}") from None
    if version == 0 and tables:
        raise StoreError(f"{path}: not a beaconlite database (it has tables but no schema version)")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: database schema version {version} is newer than this beaconlite "
            f"understands ({SCHEMA_VERSION}); upgrade beaconlite"
        )
    return version


def open_writer(path: Path, group_access: bool = False) -> None:
    """Open (creating and migrating) the database. Call only while holding the daemon lock."""
    path = Path(path)
    ensure_directory(path.parent, group_access)
    try:
        # Create the file ourselves so it never exists with looser permissions; SQLite
        # gives its -wal and -shm files the database file's mode.
        create_private_file(path, file_mode(group_access))
    except OSError as e:
        raise StoreError(f"{path}: cannot create database: {e.strerror}") from None
    _connect(path)
    version = _schema_version(path)
    try:
        db.execute_sql("PRAGMA journal_mode=wal")
        if version < SCHEMA_VERSION:
            # All steps in one transaction: a reader sees the old schema or the new one,
            # never a half-migrated database.
            with _write():
                for step in range(version, SCHEMA_VERSION):
                    MIGRATIONS[step]()
                db.execute_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except (OperationalError, DatabaseError) as e:
        raise StoreError(f"{path}: cannot prepare database: {e}") from None


def open_attached(path: Path) -> None:
    """Open a database a daemon already prepared (a foreground run beside a live daemon)."""
    open_reader(path, allow_missing=False)


def open_reader(path: Path, allow_missing: bool = True) -> bool:
    """Open for queries without creating or migrating; False when there is no database yet.

    A missing database reads as empty history: an in-memory one with the schema stands in.
    """
    path = Path(path)
    if path.exists():
        if not os.access(path, os.R_OK):
            raise StoreError(f"{path}: permission denied")
        _connect(path, uri=f"file:{quote(str(path.absolute()))}?mode=rw")
        version = _schema_version(path)
    else:
        version = 0
    if version == 0:  # missing, or just created and not yet given its schema
        if not allow_missing:
            raise StoreError(f"{path}: database does not exist yet")
        _connect(":memory:")
        for migrate in MIGRATIONS:
            migrate()
        return False
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"{path}: database schema version {version} is older than this beaconlite's "
            f"({SCHEMA_VERSION}); start the daemon once to migrate it"
        )
    try:
        db.execute_sql("SELECT 1 FROM run LIMIT 1").fetchall()
    except (OperationalError, DatabaseError) as e:
        raise StoreError(f"{path}: not a usable beaconlite database: {e}") from None
    return True


def close() -> None:
    if not db.is_closed():
        db.close()


# -- instances ----------------------------------------------------------------------------


def register_instance(kind: str, pid: int, host: str, version: str, orphan_after: float, now: float) -> int:
    with _write():
        return Instance.insert(
            kind=kind,
            pid=pid,
            host=host,
            version=version,
            started_at=now,
            heartbeat_at=now,
            orphan_after=orphan_after,
        ).execute()


def heartbeat(instance_id: int, run_ids: Iterable[int], now: float) -> None:
    """The instance's and its live runs' heartbeats, in one short transaction."""
    run_ids = list(run_ids)
    with _write():
        Instance.update(heartbeat_at=now).where(Instance.id == instance_id).execute()
        if run_ids:
            Run.update(heartbeat_at=now).where(Run.id.in_(run_ids), Run.status == "running").execute()


def set_leaked_threads(instance_id: int, count: int) -> None:
    with _write():
        Instance.update(leaked_threads=count).where(Instance.id == instance_id).execute()


def stop_instance(instance_id: int, now: float) -> None:
    with _write():
        Instance.update(stopped_at=now, heartbeat_at=now).where(Instance.id == instance_id).execute()


def instances(ids) -> dict[int, Instance]:
    ids = {i for i in ids if i is not None}
    return {i.id: i for i in Instance.select().where(Instance.id.in_(ids))} if ids else {}


def latest_daemon() -> Instance | None:
    return Instance.select().where(Instance.kind == "daemon").order_by(Instance.id.desc()).first()


# -- runs and steps -----------------------------------------------------------------------


def start_run(
    job: str,
    trigger: str,
    scheduled_at: float,
    attempt: int,
    deadline_at: float,
    instance_id: int | None,
    now: float,
) -> int:
    """Insert the run row (status running) before any work; SlotTaken if the slot ran."""
    try:
        with _write():
            return Run.insert(
                job=job,
                status="running",
                trigger=trigger,
                attempt=attempt,
                scheduled_at=scheduled_at,
                started_at=now,
                deadline_at=deadline_at,
                heartbeat_at=now,
                instance_id=instance_id,
            ).execute()
    except IntegrityError:
        raise SlotTaken(f"{job} slot {scheduled_at} attempt {attempt} already has a run") from None


def record_skipped(
    job: str, scheduled_at: float, reason: str, now: float, trigger: str = "schedule", attempt: int = 1
) -> int | None:
    """A fire that never started; None when its slot is already recorded."""
    try:
        with _write():
            return Run.insert(
                job=job,
                status="skipped",
                trigger=trigger,
                attempt=attempt,
                scheduled_at=scheduled_at,
                finished_at=now,
                error=reason,
            ).execute()
    except IntegrityError:
        return None


def start_step(run_id: int, name: str, now: float) -> int:
    with _write():
        return Step.insert(run_id=run_id, name=name, status="running", started_at=now).execute()


def finish_step(step_id: int, status: str, error: str | None, now: float) -> bool:
    with _write():
        return (
            Step.update(status=status, error=error, finished_at=now)
            .where(Step.id == step_id, Step.status == "running")
            .execute()
            == 1
        )


def add_skipped_steps(run_id: int, names: Iterable[str], now: float) -> None:
    rows = [dict(run_id=run_id, name=n, status="skipped", finished_at=now) for n in names]
    if rows:
        with _write():
            Step.insert_many(rows).execute()


def finish_run(
    run_id: int,
    status: str,
    now: float,
    *,
    error: str | None = None,
    summary=None,
    output: str | None = None,
    duration_s: float | None = None,
    suspended_s: float | None = None,
) -> bool:
    """Compare-and-set a live run to its terminal status; False when someone else did first.

    Steps still running end with it: the step in flight takes the run's status.
    """
    fields = dict(status=status, finished_at=now, error=error, duration_s=duration_s)
    if summary is not None:
        fields["summary"] = json.dumps(summary, default=str)
    if output is not None:
        fields["output"] = output
    if suspended_s:
        fields["suspended_s"] = suspended_s
    with _write():
        won = Run.update(**fields).where(Run.id == run_id, Run.status == "running").execute()
        if won:
            in_flight = status if status in ("error", "timeout", "cancelled") else "skipped"
            Step.update(status=in_flight, finished_at=now).where(
                Step.run_id == run_id, Step.status == "running"
            ).execute()
    return won == 1


def finish_abandoned(run_id: int, status: str, error: str, now: float) -> bool:
    """Finish a run nobody is running any more (orphaned, or its thread never ended)."""
    return run_id in finish_abandoned_many([(run_id, error)], status, now)


def finish_abandoned_many(rows: list[tuple[int, str]], status: str, now: float) -> set[int]:
    """Compare-and-set each (run id, reason) to ``status`` in one transaction; the ids won."""
    with _write():
        ids = [run_id for run_id, _ in rows]
        won = {r.id for r in Run.select(Run.id).where(Run.id.in_(ids), Run.status == "running")}
        by_reason: dict[str, list[int]] = {}
        for run_id, reason in rows:
            if run_id in won:
                by_reason.setdefault(reason, []).append(run_id)
        for reason, group in by_reason.items():
            Run.update(status=status, finished_at=now, error=reason, duration_s=now - Run.started_at).where(
                Run.id.in_(group), Run.status == "running"
            ).execute()
        if won:
            Step.update(status=status, finished_at=now).where(
                Step.run_id.in_(list(won)), Step.status == "running"
            ).execute()
    return won


def live_runs(instance_id: int | None = None) -> list[Run]:
    query = Run.select().where(Run.status == "running")
    if instance_id is not None:
        query = query.where(Run.instance_id == instance_id)
    return list(query.order_by(Run.id))


def run_status(run_id: int) -> str | None:
    row = Run.select(Run.status).where(Run.id == run_id).first()
    return row.status if row else None


def last_started_slot(job: str) -> float | None:
    """The latest slot of a job that started (a slot starts at most once)."""
    return (
        Run.select(fn.MAX(Run.scheduled_at))
        .where(Run.job == job, Run.status != "skipped", Run.trigger != "manual")
        .scalar()
    )


def last_start(job: str) -> float | None:
    """When the job last started a run (skipped rows have no start)."""
    row = (
        Run.select(Run.started_at)
        .where(Run.job == job, Run.started_at.is_null(False))
        .order_by(Run.id.desc())
        .first()
    )
    return row.started_at if row else None


def previous_outcome(job: str, before_id: int) -> str | None:
    """The status of the job's last success, warning, error or timeout before this run."""
    latest = None
    for status in ("success", "warning", "error", "timeout"):
        found = (
            Run.select(fn.MAX(Run.id))
            .where(Run.job == job, Run.status == status, Run.id < before_id)
            .scalar()
        )
        if found and (latest is None or found > latest[0]):
            latest = (found, status)
    return latest[1] if latest else None


def counts_since(since: float) -> dict[str, int]:
    """Runs started, and errors, timeouts and reaped orphans finished, since ``since``."""
    runs = Run.select().where(Run.started_at >= since).count()
    by_status = dict(
        Run.select(Run.status, fn.COUNT(Run.id))
        .where(Run.finished_at >= since, Run.status.in_(("error", "timeout")))
        .group_by(Run.status)
        .tuples()
    )
    orphans = (
        Run.select()
        .where(Run.finished_at >= since, Run.status == "timeout", Run.error.startswith("orphaned:"))
        .count()
    )
    return {
        "runs": runs,
        "error": by_status.get("error", 0),
        "timeout": by_status.get("timeout", 0),
        "orphans": orphans,
    }


def ledger_mark(job: str) -> float | None:
    """Up to when a job's slots have been dealt with: the latest slot it started, or the
    latest time a skip of it was recorded (a skip row settles every slot due before it)."""
    skipped = (
        Run.select(fn.MAX(Run.finished_at))
        .where(Run.job == job, Run.status == "skipped", Run.trigger != "manual")
        .scalar()
    )
    marks = [m for m in (last_started_slot(job), skipped) if m is not None]
    return max(marks) if marks else None


# -- requests from the CLI to the daemon --------------------------------------------------


def add_request(kind: str, now: float, job: str | None = None, run_id: int | None = None) -> int:
    with _write():
        return Request.insert(kind=kind, job=job, run_id=run_id, created_at=now).execute()


def take_requests(now: float) -> list[Request]:
    """The open requests, marked taken (the daemon is their only consumer)."""
    with _write():
        found = list(Request.select().where(Request.taken_at.is_null()).order_by(Request.id))
        if found:
            Request.update(taken_at=now).where(Request.id.in_([r.id for r in found])).execute()
    return found


def answer_request(request_id: int, result_run_id: int | None = None, error: str = "") -> None:
    """Answer a taken request; an empty error means done."""
    with _write():
        Request.update(result_run_id=result_run_id, error=error).where(Request.id == request_id).execute()


def get_request(request_id: int) -> Request | None:
    return Request.get_or_none(Request.id == request_id)


def withdraw_request(request_id: int) -> bool:
    """Take back a request the daemon has not taken; False if it already has."""
    with _write():
        return Request.delete().where(Request.id == request_id, Request.taken_at.is_null()).execute() == 1


# -- reading for the CLI ------------------------------------------------------------------


def _step_counts(run_ids: list[int]) -> dict[int, tuple[int, int]]:
    if not run_ids:
        return {}
    ok = fn.SUM(Step.status.in_(OK).cast("INTEGER"))
    rows = (
        Step.select(Step.run_id, fn.COUNT(Step.id), ok)
        .where(Step.run_id.in_(run_ids))
        .group_by(Step.run_id)
        .tuples()
    )
    return {run_id: (total, int(good or 0)) for run_id, total, good in rows}


def list_runs(
    job: str | None = None, status: str | None = None, since: float | None = None, limit: int = 20
) -> list[tuple[Run, int, int]]:
    """History newest first, each with (steps_total, steps_ok)."""
    query = Run.select()
    if job:
        query = query.where(Run.job == job)
    if status:
        query = query.where(Run.status == status)
    if since is not None:
        query = query.where(
            (Run.started_at >= since) | (Run.started_at.is_null() & (Run.finished_at >= since))
        )
    runs = list(query.order_by(Run.id.desc()).limit(limit))
    counts = _step_counts([r.id for r in runs])
    return [(r, *counts.get(r.id, (0, 0))) for r in runs]


def get_run(run_id: int) -> tuple[Run, list[Step]] | None:
    run = Run.get_or_none(Run.id == run_id)
    if run is None:
        return None
    return run, list(Step.select().where(Step.run_id == run_id).order_by(Step.id))


def job_overview(names: Iterable[str]) -> dict[str, dict]:
    """Per job: last status (skips ignored), when it finished, live runs, last skip reason."""
    live = dict(
        Run.select(Run.job, fn.COUNT(Run.id)).where(Run.status == "running").group_by(Run.job).tuples()
    )
    out = {}
    for name in names:
        # One indexed MAX per status: (job, status, id) makes each a single seek, so this
        # stays flat however long a job's history is.
        last_ids = [
            Run.select(fn.MAX(Run.id)).where(Run.job == name, Run.status == s).scalar() for s in FINISHED
        ]
        last_id = max((i for i in last_ids if i), default=None)
        last = Run.get_by_id(last_id) if last_id else None
        skip = (
            Run.select(Run.error)
            .where(Run.job == name, Run.status == "skipped")
            .order_by(Run.id.desc())
            .first()
        )
        out[name] = {
            "last_status": last.status if last else None,
            "last_finished_at": last.finished_at if last else None,
            "live_runs": live.get(name, 0),
            "last_skip_reason": skip.error if skip else None,
        }
    return out


def job_states() -> list[JobState]:
    return list(JobState.select().order_by(JobState.name))


def save_job_states(states: list[dict]) -> None:
    """Replace the daemon's published job list (at start, reload and when a fire time moves)."""
    with _write():
        JobState.delete().execute()
        if states:
            JobState.insert_many(states).execute()


def prune(before: float, batch_size: int = 500, dry_run: bool = False) -> int:
    """Delete finished runs (and steps) that finished before ``before``, in short batches."""
    finished = (Run.status != "running") & (Run.finished_at < before)
    if dry_run:
        return Run.select().where(finished).count()
    total = 0
    while True:
        started = time.monotonic()
        with _write():  # one short write transaction per batch
            ids = [r.id for r in Run.select(Run.id).where(finished).limit(batch_size)]
            if not ids:
                return total
            Step.delete().where(Step.run_id.in_(ids)).execute()
            Run.delete().where(Run.id.in_(ids)).execute()
        total += len(ids)
        # Leave the lock free as long as we held it: a writer in another process polls
        # (SQLite's busy handler sleeps and retries) and back-to-back batches starve it.
        time.sleep(min(0.05, time.monotonic() - started))


def daemon_state(now: float, lock_free: bool = False) -> tuple[Instance | None, str]:
    """The latest daemon instance and its state: running, stopped or stale.

    Stopped: a clean stop, or nobody holds the daemon lock (it died). Stale: a heartbeat
    older than the orphan_after it recorded (frozen, or asleep).
    """
    daemon = latest_daemon()
    if daemon is None or daemon.stopped_at is not None or lock_free:
        return daemon, "stopped"
    if now - daemon.heartbeat_at > daemon.orphan_after:
        return daemon, "stale"
    return daemon, "running"
