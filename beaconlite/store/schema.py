"""The schema: peewee models, the schema version and its migrations, opening the database
(a SQLite file, or a PostgreSQL database shared by the nodes of a cluster)."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from urllib.parse import quote

from peewee import (
    SQL,
    DatabaseError,
    DoubleField,
    ImproperlyConfigured,
    IntegerField,
    Model,
    OperationalError,
    SqliteDatabase,
    TextField,
)

from beaconlite.errors import StoreError, Unreachable, WriteFailed
from beaconlite.lock import create_private_file
from beaconlite.places import PostgresURL, is_postgres
from beaconlite.statuses import RUNNING, SUCCESS
from beaconlite.store.database import DRIVER_ERRORS, INCREMENTAL, PRAGMAS, PostgresPool, close, db, write

SCHEMA_VERSION = 8

__all__ = ["close", "db", "write"]


class BaseModel(Model):
    class Meta:
        database = db
        legacy_table_names = False


class Instance(BaseModel):
    """A process that runs jobs: the daemon, or a foreground `beaconlite run`."""

    kind = TextField()  # "daemon" | "foreground"
    pid = IntegerField()
    host = TextField()
    version = TextField()
    started_at = DoubleField()
    heartbeat_at = DoubleField()
    stopped_at = DoubleField(null=True)
    orphan_after = DoubleField()
    leaked_threads = IntegerField(default=0)
    # PostgreSQL: alive until this time by the database's clock, renewed with each heartbeat
    # (SPEC 11). Null on SQLite, where the daemon lock says who is alive.
    lease_until = DoubleField(null=True)


class Run(BaseModel):
    job = TextField()
    status = TextField()
    trigger = TextField()
    attempt = IntegerField(default=1)
    scheduled_at = DoubleField()
    started_at = DoubleField(null=True)
    finished_at = DoubleField(null=True)
    deadline_at = DoubleField(null=True)
    heartbeat_at = DoubleField(null=True)
    duration_s = DoubleField(null=True)
    instance_id = IntegerField(null=True)
    error = TextField(null=True)
    summary = TextField(null=True)
    output = TextField(null=True)
    suspended_s = DoubleField(null=True)
    # A skipped row may stand for several missed slots: how many, and the last of them
    # (scheduled_at is the first). 1 and null for every other row.
    slots = IntegerField(default=1, constraints=[SQL("DEFAULT 1")])
    last_slot_at = DoubleField(null=True)

    class Meta:
        # Each index earns its bytes (about 150 per run in all): every query below names the
        # one it uses, and a test checks the plans (test_store.py).
        indexes = (
            # A slot starts at most once; a job's latest slot (the ledger).
            (("job", "scheduled_at", "attempt"), True),
            # A job's latest run of each status (status, health, metrics, notifications); a
            # job's history, newest first, merged from its statuses (runs --job, the strips).
            (("job", "status"), False),
            # The last day's counts, runs --since, prune.
            (("finished_at",), False),
        )


# Live runs: the reaper, status and health read them all the time; runs that did not succeed:
# `runs --status` of the rarer statuses. Partial indexes keep both small and independent of
# the history's size.
Run.add_index(Run.index(Run.instance_id, name="run_live", where=(Run.status == RUNNING)))
Run.add_index(Run.index(Run.status, name="run_unsuccessful", where=(Run.status != SUCCESS)))


class Step(BaseModel):
    run_id = IntegerField(index=True)
    name = TextField()
    status = TextField()
    started_at = DoubleField(null=True)
    finished_at = DoubleField(null=True)
    error = TextField(null=True)


class Request(BaseModel):
    """A CLI request to the daemon (trigger / cancel / reload), picked up by its tick."""

    kind = TextField()  # "trigger" | "cancel" | "reload"
    job = TextField(null=True)
    run_id = IntegerField(null=True)
    created_at = DoubleField()
    taken_at = DoubleField(null=True)
    answer = TextField(null=True)  # "done" | "queued" | "refused" (error says why); null: not yet
    result_run_id = IntegerField(null=True)
    error = TextField(null=True)
    detail = TextField(null=True)  # what a done request did, for people ("2 added, ...")
    node = IntegerField(null=True)  # for this instance alone (a reload asks every node); null: any
    taken_by = IntegerField(null=True)  # the instance that took it


Request.add_index(Request.index(Request.id, name="request_open", where=Request.taken_at.is_null()))


class JobState(BaseModel):
    """What the daemon scheduled, so `status --database` needs no config."""

    name = TextField(primary_key=True)
    schedule = TextField(null=True)
    enabled = IntegerField(default=1)
    next_run_at = DoubleField(null=True)
    timezone = TextField(null=True)  # the zone of its cron schedule
    spec = TextField(null=True)  # a digest of the job's config as the daemon loaded it

    class Meta:
        table_name = "job"


class Lease(BaseModel):
    """A short lease one node of a cluster holds (housekeeping), by the database's clock."""

    name = TextField(primary_key=True)
    holder = IntegerField()
    until = DoubleField()


class SchemaVersion(BaseModel):
    """PostgreSQL's record of the schema version (SQLite keeps it in PRAGMA user_version)."""

    version = IntegerField()

    class Meta:
        table_name = "beaconlite_schema"


class Pause(BaseModel):
    """A job paused by `beaconlite pause` (kept across restarts), or resumed since."""

    job = TextField(primary_key=True)
    paused_at = DoubleField()
    paused_by = TextField()  # user@host
    resumed_at = DoubleField(null=True)  # null while paused; the ledger starts again here


def _add_slot_columns() -> None:
    # The first migration creates `run` from today's model, which has these columns
    # already: add them only where an older beaconlite made the table.
    have = {c.name for c in db.get_columns("run")}
    if "slots" not in have:
        db.execute_sql("ALTER TABLE run ADD COLUMN slots INTEGER NOT NULL DEFAULT 1")
    if "last_slot_at" not in have:
        db.execute_sql("ALTER TABLE run ADD COLUMN last_slot_at DOUBLE PRECISION")


def _add_request_answer() -> None:
    if "answer" not in {c.name for c in db.get_columns("request")}:
        db.execute_sql("ALTER TABLE request ADD COLUMN answer VARCHAR(255)")
        # Requests answered before: an empty error was "done", "queued" a held fire.
        db.execute_sql(
            "UPDATE request SET answer = CASE WHEN error = '' THEN 'done' "
            "WHEN error = 'queued' THEN 'queued' ELSE 'refused' END WHERE error IS NOT NULL"
        )


def _add_job_timezone() -> None:
    if "timezone" not in {c.name for c in db.get_columns("job")}:
        db.execute_sql("ALTER TABLE job ADD COLUMN timezone VARCHAR(255)")


def _add_pause_and_reload() -> None:
    db.create_tables([Pause])
    if "detail" not in {c.name for c in db.get_columns("request")}:
        db.execute_sql("ALTER TABLE request ADD COLUMN detail TEXT")
    if "spec" not in {c.name for c in db.get_columns("job")}:
        db.execute_sql("ALTER TABLE job ADD COLUMN spec VARCHAR(255)")


def _lean_run_indexes() -> None:
    # Four indexes no hot query needed (about 80 bytes a run) make way for two that do
    # the same work: (job, status) is (job, status, id) without storing the id twice.
    for name in ("run_job_id", "run_job_status_id", "run_status_id", "run_started_at"):
        db.execute_sql(f"DROP INDEX IF EXISTS {name}")
    db.create_tables([Run])  # the model's indexes, IF NOT EXISTS


def _cluster_columns() -> None:
    if "lease_until" not in {c.name for c in db.get_columns("instance")}:
        db.execute_sql("ALTER TABLE instance ADD COLUMN lease_until DOUBLE PRECISION")
    have = {c.name for c in db.get_columns("request")}
    for column in ("node", "taken_by"):
        if column not in have:
            db.execute_sql(f"ALTER TABLE request ADD COLUMN {column} INTEGER")
    db.create_tables([Lease])


# Each migration takes the schema from version i to i + 1. A later column change adds a
# step here, never edits an earlier one.
MIGRATIONS = [
    lambda: db.create_tables([Instance, Run, Step]),
    lambda: db.create_tables([Request, JobState]),
    _add_slot_columns,
    _add_request_answer,
    _add_job_timezone,
    _add_pause_and_reload,
    _lean_run_indexes,
    _cluster_columns,
]
assert len(MIGRATIONS) == SCHEMA_VERSION


# -- opening ------------------------------------------------------------------------------


def ensure_directory(directory: Path, group_access: bool, parents: bool = True) -> None:
    """Create the database's directory (0700, or 2770 with group access). ``parents``:
    create missing parents too (the default state directory); otherwise a missing parent is
    refused (a typo in a configured path must not grow a directory tree)."""
    if directory.is_dir():
        return  # an existing directory's mode is never changed
    if not parents and not directory.parent.is_dir():
        raise StoreError(
            f"{directory.parent} does not exist (the database's directory is made, not its parents)"
        )
    try:
        directory.mkdir(parents=parents, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o770 | stat.S_ISGID if group_access else 0o700)  # exact, whatever the umask
    except OSError as e:
        raise StoreError(f"cannot create the directory {directory}: {e.strerror}") from None


def file_mode(group_access: bool) -> int:
    return 0o660 if group_access else 0o600


def tighten_modes(database: Path, group_access: bool) -> list[tuple[Path, int, int]]:
    """Take away what is more open than ``file_mode`` from the database, its WAL, shm,
    lock and journal files (an older beaconlite, a copy or a restore may have left them
    readable by everyone); (file, old mode, new mode) for each one changed."""
    wanted = file_mode(group_access)
    changed = []
    for suffix in ("", "-wal", "-shm", ".lock", ".unrecorded"):
        path = database.with_name(database.name + suffix)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & ~wanted:
                os.chmod(path, mode & wanted)
                changed.append((path, mode, mode & wanted))
        except FileNotFoundError:
            continue
        except OSError as e:
            raise StoreError(f"{path}: cannot tighten its mode: {e.strerror}") from None
    return changed


def _use(handle) -> None:
    """Make ``handle`` the store's database, closing what the previous one held."""
    old = db.obj
    if old is not None:
        if hasattr(old, "close_all"):
            old.close_all()  # a pool: every connection it opened
        elif not old.is_closed():
            old.close()
    db.initialize(handle)


def _connect(path: Path | str, uri: str | None = None) -> None:
    _use(
        SqliteDatabase(uri or str(path), pragmas=PRAGMAS, uri=bool(uri), check_same_thread=False, timeout=10)
    )
    try:
        db.connect(reuse_if_open=True)
    except (OperationalError, DatabaseError, sqlite3.Error) as e:
        raise StoreError(f"{path}: cannot open database: {e}") from None


# A constant key for the migration's advisory lock: "beaconlite" in ASCII, folded to 63 bits.
MIGRATION_LOCK = int.from_bytes(b"beaconli", "big") & (2**63 - 1)


def _connect_postgres(target: PostgresURL, max_connections: int, read_only: bool) -> None:
    options = {"options": "-c default_transaction_read_only=on"} if read_only else {}
    _use(
        PostgresPool(
            target.url,
            max_connections=max_connections,
            prefer_psycopg3=True,
            connect_timeout=5,
            application_name="beaconlite",
            # A cut network shows within ~15 s instead of TCP's two hours.
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            **options,
        )
    )
    try:
        db.connect(reuse_if_open=True)
    except ImproperlyConfigured:
        raise StoreError(
            f"{target}: a PostgreSQL database needs its driver: pip install 'beaconlite[postgresql]'"
        ) from None
    except DRIVER_ERRORS as e:
        raise Unreachable(f"{target}: cannot connect: {' '.join(str(e).split())}") from None


def _postgres_version(target: PostgresURL) -> int:
    try:
        tables = set(db.get_tables())
        if "beaconlite_schema" not in tables:
            if tables & {"run", "instance"}:
                raise StoreError(f"{target}: not a beaconlite database (it has tables but no schema version)")
            return 0
        row = SchemaVersion.select(SchemaVersion.version).first()
    except DRIVER_ERRORS as e:
        raise StoreError(f"{target}: not a usable beaconlite database: {' '.join(str(e).split())}") from None
    version = row.version if row else 0
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{target}: database schema version {version} is newer than this beaconlite "
            f"understands ({SCHEMA_VERSION}); upgrade beaconlite"
        )
    return version


def _open_postgres_writer(target: PostgresURL, max_connections: int) -> None:
    """Migrate under an advisory lock, in one transaction: one node migrates, the others
    wait for it and then find the schema current."""
    _connect_postgres(target, max_connections, read_only=False)
    try:
        with write():
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            version = _postgres_version(target)
            if version < SCHEMA_VERSION:
                for step in range(version, SCHEMA_VERSION):
                    MIGRATIONS[step]()
                db.create_tables([SchemaVersion])
                SchemaVersion.delete().execute()
                SchemaVersion.insert(version=SCHEMA_VERSION).execute()
    except WriteFailed as e:
        raise StoreError(f"{target}: cannot prepare database: {e}") from None


def _wal_hint(path: Path) -> str:
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        return f"; if it was restored from a copy, {wal.name} beside it may belong to another database"
    return ""


def _schema_version(path: Path) -> int:
    try:
        version = db.execute_sql("PRAGMA user_version").fetchone()[0]
        tables = set(db.get_tables())
    except (OperationalError, DatabaseError) as e:
        raise StoreError(f"{path}: not a usable beaconlite database: {e}{_wal_hint(path)}") from None
    if version == 0 and tables:
        raise StoreError(
            f"{path}: not a beaconlite database (it has tables but no schema version){_wal_hint(path)}"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: database schema version {version} is newer than this beaconlite "
            f"understands ({SCHEMA_VERSION}); upgrade beaconlite"
        )
    return version


def open_writer(path, group_access: bool = False, max_connections: int = 10) -> None:
    """Open (creating and migrating) the database. Call only while holding the daemon lock
    (on PostgreSQL: any node, under the migration's advisory lock)."""
    if is_postgres(path):
        _open_postgres_writer(path, max_connections)
        return
    path = Path(path)
    ensure_directory(path.parent, group_access)
    try:
        # Create the file ourselves so it never exists with looser permissions; SQLite
        # gives its -wal and -shm files the database file's mode.
        create_private_file(path, file_mode(group_access))
    except OSError as e:
        raise StoreError(f"{path}: cannot create database: {e.strerror}") from None
    # mode=rw: every connection (each thread opens its own) finds the file or fails; none
    # may quietly create an empty database where ours was deleted.
    _connect(path, uri=f"file:{quote(str(path.absolute()))}?mode=rw")
    version = _schema_version(path)
    try:
        if version == 0:
            # Before the first table, or never: pruned space goes back to the file system
            # in short steps (give_back_free_pages) instead of staying in the file for good.
            db.execute_sql(f"PRAGMA auto_vacuum = {INCREMENTAL}")
        db.execute_sql("PRAGMA journal_mode=wal")
        if version < SCHEMA_VERSION:
            # All steps in one transaction: a reader sees the old schema or the new one,
            # never a half-migrated database.
            with write():
                for step in range(version, SCHEMA_VERSION):
                    MIGRATIONS[step]()
                db.execute_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except (OperationalError, DatabaseError) as e:
        raise StoreError(f"{path}: cannot prepare database: {e}") from None


def open_attached(path: Path) -> None:
    """Open a database a daemon already prepared (a foreground run beside a live daemon)."""
    _open_existing(path, "rw", allow_missing=False)


def open_reader(path: Path, allow_missing: bool = True) -> bool:
    """Open for queries: read-only (never a write to the file, not even a checkpoint or a
    WAL recovery into it), never created or migrated. False when there is no database yet:
    a missing one reads as empty history (an in-memory one with the schema stands in)."""
    return _open_existing(path, "ro", allow_missing)


def open_for_changes(path: Path) -> bool:
    """Open an existing database to change rows (prune, reap, requests to the daemon),
    never created or migrated; False (an empty stand-in) when there is none yet."""
    return _open_existing(path, "rw", allow_missing=True)


def _open_existing(path, mode: str, allow_missing: bool) -> bool:
    if is_postgres(path):
        _connect_postgres(path, max_connections=4, read_only=mode == "ro")
        version = _postgres_version(path)
    elif Path(path).exists():
        path = Path(path)
        if not os.access(path, os.R_OK):
            raise StoreError(f"{path}: permission denied")
        _connect(path, uri=f"file:{quote(str(path.absolute()))}?mode={mode}")
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
