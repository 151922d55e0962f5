"""The database handle and how a write happens: one short transaction, bounded waiting, and
the one record of whether the database is writable right now (an *outage* when it is not).

A write waits at most the calling thread's *patience*: the busy timeout by default, less
on the daemon's tick and on the scheduler's thread, which must keep their pace while
another process holds the database (waiting on the database is not a freeze). A write that
fails raises ``WriteFailed`` carrying SQLite's own words; the rollback after it never
replaces them (after SQLITE_FULL, SQLite has already rolled back, and a second rollback
would say only "no transaction is active").
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import contextmanager

from peewee import DatabaseError, IntegrityError, InterfaceError, SqliteDatabase

from beaconlite.errors import WriteFailed

log = logging.getLogger("beaconlite.store")

BUSY_TIMEOUT = 10.0  # seconds; SQLite's own wait for another process's lock
PRAGMAS = [("busy_timeout", int(BUSY_TIMEOUT * 1000)), ("synchronous", "normal"), ("foreign_keys", 0)]

db = SqliteDatabase(None)  # one connection per thread (peewee's thread_safe default)

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
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _begin(conn) -> None:
    conn.execute("BEGIN IMMEDIATE")


@contextmanager
def write():
    """A write transaction (BEGIN IMMEDIATE, so a read-then-write never has to upgrade).

    Raises WriteFailed when the database refuses it, IntegrityError as is (a unique key
    said no: the caller's answer, not an outage).
    """
    if not _write_lock.acquire(timeout=_wait_left()):
        # Another thread here holds the write lock, itself waiting on SQLite's lock.
        raise outage.failed(sqlite3.OperationalError("database is locked"))
    try:
        try:
            conn = db.connection()
            _set_busy_timeout(conn, min(_wait_left(), BUSY_TIMEOUT))
            _begin(conn)
        except (DatabaseError, InterfaceError, sqlite3.Error) as e:
            raise outage.failed(e) from None
        try:
            yield
            conn.execute("COMMIT")
        except IntegrityError:
            _rollback(conn)
            raise
        except (DatabaseError, InterfaceError, sqlite3.Error) as e:
            _rollback(conn)
            raise outage.failed(e) from None
        except BaseException:
            _rollback(conn)
            raise
    finally:
        _write_lock.release()
    outage.succeeded()


def close() -> None:
    if not db.is_closed():
        db.close()
