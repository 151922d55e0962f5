"""One small hierarchy of errors, and the abort signals a run sees."""

from __future__ import annotations

from beaconlite.statuses import CANCELLED, TIMEOUT


class BeaconError(Exception):
    """Anything beaconlite refuses with one clear line."""


class ConfigError(BeaconError):
    """A config file that cannot be used (exit 2)."""


class StoreError(BeaconError):
    """A database that cannot be used (exit 2)."""


class Refused(BeaconError):
    """A well-formed request whose answer is no (exit 1)."""


class LockHeld(Refused):
    """Another daemon holds the database's lock (exit 1)."""

    def __init__(self, path: str, pid: int | None):
        self.path = path
        self.pid = pid
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"{path} is locked by a running daemon ({holder})")


class Unreachable(Refused):
    """The database server cannot be reached now (exit 1: a service manager tries again;
    exit 2 would keep a cluster node down after a server restart)."""


class WriteFailed(BeaconError):
    """The database refused a write (locked past our patience, disk full, I/O error).

    ``cause`` is SQLite's own words ("database or disk is full"): what the log and the
    skip reasons name, never a secondary error from cleaning up after it.
    """

    def __init__(self, cause: str):
        self.cause = cause
        super().__init__(cause)


class RunEnded(BeaconError):
    """A write for a run that is no longer live: someone else recorded its end."""

    def __init__(self, run_id: int, status: str | None):
        self.run_id = run_id
        self.status = status
        super().__init__(f"run {run_id} was already recorded as {status or 'gone'}")


class Paused(BeaconError):
    """The job is paused: a scheduled fire is refused by the write that would record it."""


class SlotTaken(BeaconError):
    """(job, scheduled_at, attempt) already has a run: a slot starts at most once."""


class ScheduleError(ValueError):
    """A schedule that cannot be read, or that never fires; the message is fit for a user."""


class StepFailed(Exception):
    """A step's finding: its message is the whole story (no exception type, no traceback)."""


class RunAborted(BaseException):
    """Raised inside a run at a checkpoint once the run has been aborted.

    A BaseException, like KeyboardInterrupt, so that a job's own ``except Exception``
    does not swallow it.
    """

    status = CANCELLED

    def __init__(self, reason: str = ""):
        self.reason = reason
        super().__init__(reason)


class RunTimeout(RunAborted):
    """The run's deadline passed."""

    status = TIMEOUT


class RunCancelled(RunAborted):
    """The run was cancelled, replaced, or the daemon is stopping."""

    status = CANCELLED
