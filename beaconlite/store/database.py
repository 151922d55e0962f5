"""The database handle and how a write happens: one short transaction, bounded waiting, and
the one record of whether the database is writable right now (an *outage* when it is not).

A write waits at most the calling thread's *patience*: the busy timeout by default, less
on the daemon's tick and on the scheduler's thread, which must keep their pace while
another process holds the database (waiting on the database is not a freeze). A write that
fails raises ``WriteFailed`` carrying the database's own words; the rollback after it never
replaces them (after SQLITE_FULL, SQLite has already rolled back, and a second rollback
would say only "no transaction is active").

The handle is SQLite (a file, one connection per thread) or PostgreSQL (a bounded pool per
process: a thread checks a connection out for a write and gives it back at its end).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from typing import TypeVar

from peewee import DatabaseError, DatabaseProxy, IntegrityError, InterfaceError, PostgresqlDatabase
from playhouse.pool import MaxConnectionsExceeded, PooledDatabase, PooledPostgresqlDatabase

from beaconlite.errors import WriteFailed

try:  # the optional PostgreSQL driver: its own errors escape peewee's wrapping on a broken link
    import psycopg

    DRIVER_ERRORS: tuple[type[BaseException], ...] = (
        DatabaseError,
        InterfaceError,
        sqlite3.Error,
        psycopg.Error,
        MaxConnectionsExceeded,
    )
except ImportError:  # pragma: no cover - SQLite-only installs
    DRIVER_ERRORS = (DatabaseError, InterfaceError, sqlite3.Error, MaxConnectionsExceeded)

log = logging.getLogger("beaconlite.store")
T = TypeVar("T")

BUSY_TIMEOUT = 10.0  # seconds; SQLite's own wait for another process's lock
INCREMENTAL = 2  # PRAGMA auto_vacuum: free pages stay in the file until incremental_vacuum
PRAGMAS = [("busy_timeout", int(BUSY_TIMEOUT * 1000)), ("synchronous", "normal"), ("foreign_keys", 0)]

db = DatabaseProxy()  # SQLite or PostgreSQL, chosen when the store is opened


def is_postgres() -> bool:
    return isinstance(db.obj, PostgresqlDatabase)


class PostgresPool(PooledPostgresqlDatabase):
    """A node's bounded pool (``[daemon] max_connections``), whose wait for a free
    connection is the calling thread's patience: the tick never waits 10 s behind a burst
    of writers. A pool still exhausted after that refuses the write like a busy database."""

    def connect(self, reuse_if_open=False):
        deadline = time.monotonic() + _wait_left()
        while True:
            try:  # Database.connect: the pool's _connect, without PooledDatabase's own wait
                return super(PooledDatabase, self).connect(reuse_if_open)
            except MaxConnectionsExceeded:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                with self._pool_available:
                    self._pool_available.wait(timeout=min(left, 0.05))


# In-process writers queue here rather than in SQLite's busy handler, which sleeps in
# 1-100 ms steps: with 20 runs finishing while the scheduler starts 20 more, that sleep
# would be the fire lag. Other processes (the CLI) still meet busy_timeout.
_write_lock = threading.Lock()
_local = threading.local()


@contextmanager
def patience(seconds: float):
    """Every write of this thread inside the block shares a budget of ``seconds`` of waiting
    (never more than an enclosing block has left: the tick's budget bounds all it calls)."""
    previous = getattr(_local, "until", None)
    until = time.monotonic() + seconds
    _local.until = until if previous is None else min(previous, until)
    try:
        yield
    finally:
        _local.until = previous


def _wait_left() -> float:
    until = getattr(_local, "until", None)
    return BUSY_TIMEOUT if until is None else max(0.0, until - time.monotonic())


class Outage:
    """Whether writes land. Logged once when an outage starts (with SQLite's words) and once
    when it ends, however many writes fail in between.

    A full disk lets some writes through (SQLite reuses pages it already has) and refuses
    the next: a failure within ``QUIET`` seconds of the last success continues the same
    outage, and its end is logged only once writes have landed for ``QUIET`` seconds.
    ``active`` is about now (the last write), so the daemon stops deferring at once.
    """

    QUIET = 3.0

    def __init__(self):
        self._lock = threading.Lock()
        self.cause: str | None = None  # set while the last write failed
        self._first: tuple[str, float] | None = None  # (cause, monotonic since) of the outage
        self._recovered_at: float | None = None  # monotonic time of the first success since

    @property
    def active(self) -> bool:
        return self.cause is not None

    def failed(self, error: BaseException) -> WriteFailed:
        cause = " ".join(str(error).split()) or type(error).__name__
        with self._lock:
            starts = self._first is None
            if starts:
                self._first = (cause, time.monotonic())
            if self.cause is None:
                self.cause = cause
            self._recovered_at = None
        if starts:
            log.error("the database is not writable: %s", cause, extra={"event": "store.outage"})
        return WriteFailed(self.cause or cause)

    def succeeded(self) -> None:
        if self._first is None:  # the common case: no lock taken
            return
        now = time.monotonic()
        with self._lock:
            self.cause = None
            if self._recovered_at is None:
                self._recovered_at = now
            if self._first is None or now - self._recovered_at < self.QUIET:
                return
            (cause, since), recovered = self._first, self._recovered_at
            self._first = self._recovered_at = None
        log.warning(
            "the database is writable again after %.1fs (it was: %s)",
            recovered - since,
            cause,
            extra={"event": "store.outage_end"},
        )


outage = Outage()


def _set_busy_timeout(conn, seconds: float) -> None:
    ms = max(0, int(seconds * 1000))
    if getattr(_local, "busy", None) != (id(conn), ms):
        conn.execute(f"PRAGMA busy_timeout = {ms}")
        _local.busy = (id(conn), ms)


def _rollback(conn) -> None:
    """Roll back if a transaction is still open; never let this replace the real error."""
    try:
        if is_postgres() or conn.in_transaction:
            db.execute_sql("ROLLBACK")
    except DRIVER_ERRORS:
        pass


def _begin(conn) -> None:
    if is_postgres():
        # Row locks, not a database lock: writers wait on each other only over the same
        # rows, and never longer than the caller's patience.
        db.execute_sql("BEGIN")
        ms = max(1, int(min(_wait_left(), BUSY_TIMEOUT) * 1000))
        db.execute_sql(f"SET LOCAL lock_timeout = {ms}")
        db.execute_sql(f"SET LOCAL statement_timeout = {ms + int(BUSY_TIMEOUT * 1000)}")
    else:
        _set_busy_timeout(conn, min(_wait_left(), BUSY_TIMEOUT))
        conn.execute("BEGIN IMMEDIATE")


def _give_back(failed: bool) -> None:
    """PostgreSQL: the connection goes back to the pool after each write (a run holds one
    only while it writes); one that failed is closed, so a server restart leaves no dead
    connection behind to fail the next write."""
    if not is_postgres():
        return
    try:
        if failed:
            db.manual_close()
        else:
            db.close()
    except DRIVER_ERRORS:
        pass


@contextmanager
def write():
    """A write transaction (BEGIN IMMEDIATE, so a read-then-write never has to upgrade);
    inside a ``batch``, a savepoint of the batch's transaction.

    Raises WriteFailed when the database refuses it, IntegrityError as is (a unique key
    said no: the caller's answer, not an outage).
    """
    current = getattr(_local, "batch", None)
    if current is None:
        with _transaction():
            yield
    else:
        with _savepoint(current):
            yield


@contextmanager
def _transaction():
    # SQLite: one writer at a time anyway; in-process writers queue on a lock of ours.
    serial = _write_lock if not is_postgres() else None
    if serial is not None and not serial.acquire(timeout=_wait_left()):
        # Another thread here holds the write lock, itself waiting on SQLite's lock.
        raise outage.failed(sqlite3.OperationalError("database is locked"))
    failed = True
    try:
        try:
            conn = db.connection()
            _begin(conn)
        except DRIVER_ERRORS as e:
            raise outage.failed(e) from None
        try:
            yield
            db.execute_sql("COMMIT")
            failed = False
        except IntegrityError:
            failed = False
            _rollback(conn)
            raise
        except DRIVER_ERRORS as e:
            _rollback(conn)
            raise outage.failed(e) from None
        except BaseException:
            failed = False
            _rollback(conn)
            raise
    finally:
        if serial is not None:
            serial.release()
        _give_back(failed)
    outage.succeeded()


class _Batch:
    """The writes of one thread in one transaction, and what follows its commit or its loss."""

    def __init__(self):
        self.transaction = ExitStack()  # opened by the batch's first write
        self.open = False
        self.committed: list[Callable[[], None]] = []
        self.lost: list[Callable[[str], None]] = []
        self.broken: WriteFailed | None = None  # a write failed: the whole batch is lost
        self.known: dict[str, object] = {}  # what in_this_batch() found, for the next write


@contextmanager
def batch():
    """The block's writes on this thread are one transaction: a burst of fires commits once,
    not once a row. The transaction begins at the first write, and each write is a
    savepoint in it, so a unique key's refusal undoes only that write; any other failure
    loses the whole batch (and later writes in the block fail at once, as writes do while
    the database refuses them). After the commit the block's ``on_commit`` actions run; if
    it does not commit, its ``if_lost`` actions run (with the database's words) and
    WriteFailed is raised: nothing the block wrote was recorded."""
    if getattr(_local, "batch", None) is not None:
        yield  # already in one: part of it
        return
    current = _local.batch = _Batch()
    try:
        with current.transaction:
            try:
                yield
            finally:
                _local.batch = None
            if current.broken is not None:
                raise current.broken
    except BaseException as e:
        cause = e.cause if isinstance(e, WriteFailed) else f"{type(e).__name__}: {e}"
        for action in current.lost:
            action(cause)
        raise
    for action in current.committed:
        action()


@contextmanager
def _savepoint(current: _Batch):
    if current.broken is not None:
        raise current.broken
    if not current.open:
        try:
            current.transaction.enter_context(_transaction())
        except WriteFailed as e:
            current.broken = e
            raise
        current.open = True
    _in_batch(current, "SAVEPOINT write")
    try:
        yield
    except IntegrityError:
        _in_batch(current, "ROLLBACK TO write")
        _in_batch(current, "RELEASE write")
        raise
    except DRIVER_ERRORS as e:
        # SQLite may have rolled the whole transaction back (a full disk): nothing after
        # this in the batch may quietly commit on its own.
        current.broken = outage.failed(e)
        raise current.broken from None
    except BaseException:
        _in_batch(current, "ROLLBACK TO write")
        _in_batch(current, "RELEASE write")
        raise
    _in_batch(current, "RELEASE write")


def _in_batch(current: _Batch, sql: str) -> None:
    try:
        db.execute_sql(sql)
    except DRIVER_ERRORS as e:
        current.broken = outage.failed(e)
        raise current.broken from None


def in_this_batch(key: str, look: Callable[[], T]) -> T:
    """``look()``, asked once per batch: nobody else writes while the batch's transaction
    holds the lock (on PostgreSQL: the jobs' decision locks, which a pause takes too), so
    what it found stays true until the batch's own writes change it. Outside a batch,
    ``look()`` each time."""
    current = getattr(_local, "batch", None)
    if current is None:
        return look()
    if key not in current.known:
        current.known[key] = look()
    return current.known[key]


def on_commit(action: Callable[[], None]) -> None:
    """``action()`` once this thread's writes so far are committed: now, outside a batch."""
    current = getattr(_local, "batch", None)
    if current is None:
        action()
    else:
        current.committed.append(action)


def if_lost(action: Callable[[str], None]) -> None:
    """``action(cause)`` if the batch this thread is in does not commit (nothing outside one)."""
    current = getattr(_local, "batch", None)
    if current is not None:
        current.lost.append(action)


def read_failed(error: BaseException) -> WriteFailed:
    """A read the database refused (it went away): the same outage as a refused write,
    logged once; a PostgreSQL connection it broke is closed, never handed out again."""
    if is_postgres():
        try:
            db.manual_close()
        except DRIVER_ERRORS:
            pass
    return outage.failed(error)


def close() -> None:
    if db.obj is not None and not db.is_closed():
        db.close()


# Long work (a prune) goes in writes that hold the lock about SHORT_WRITE seconds, each
# followed by BETWEEN_WRITES seconds without it. Another process waiting on the lock sleeps in
# SQLite's busy handler and retries at 1, 3, 8, 18, 33, 53 ms of waiting, at most 20 ms apart:
# a gap of 20 ms catches one of those retries whenever a hold ends within 33 ms (twice the
# aim: one write's time varies), and the next otherwise.
SHORT_WRITE = 0.015
BETWEEN_WRITES = 0.020


def in_short_writes(work: Callable[[int], int], first: int) -> int:
    """``work(size)`` in one write transaction after another until it does nothing; the
    total it did. Each size follows how long the last write took, commit included (the lock
    is held until then), damped: one write's time is only roughly its size's (the cache, a
    page split), and an overshoot is a writer kept waiting."""
    total, size = 0, first
    while True:
        started = time.monotonic()
        with write():
            done = work(size)
        took = time.monotonic() - started
        if not done:
            return total
        total += done
        size = max(100, min(50_000, int(size * min(1.5, max(0.25, SHORT_WRITE / max(took, 0.001))))))
        time.sleep(BETWEEN_WRITES)


def give_back_free_pages() -> int:
    """Shrink the file by its free pages, a few at a time (each step a short write), when the
    database keeps them for that (incremental auto-vacuum); the number of pages given back.

    Databases made before schema 7 keep their free pages for reuse: converting one takes a
    VACUUM, which holds the whole database for as long as it copies it.
    """
    if is_postgres() or db.execute_sql("PRAGMA auto_vacuum").fetchone()[0] != INCREMENTAL:
        return 0

    def free_pages(size: int) -> int:
        conn = db.connection()
        free = min(size, conn.execute("PRAGMA freelist_count").fetchone()[0])
        # One page a statement: Python's sqlite3 steps a statement without result columns
        # once, and incremental_vacuum frees one page a step (about 7 us).
        for _ in range(free):
            conn.execute("PRAGMA incremental_vacuum")
        return free

    return in_short_writes(free_pages, 100)
