"""The daemon lock: an exclusive flock on a file next to the database.

The file is never unlinked (unlinking a locked file lets a second process lock a new inode
at the same path); the holder's pid is written into it for diagnostics only.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from beaconlite.errors import LockHeld


def create_private_file(path: Path, mode: int) -> None:
    """Create ``path`` with exactly ``mode`` (whatever the umask); leave an existing one be."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


class DaemonLock:
    def __init__(self, database: Path, mode: int = 0o600):
        self.path = lock_path(database)
        self.mode = mode
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        create_private_file(self.path, self.mode)
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def acquire(self) -> None:
        """Take the lock or raise LockHeld naming the holder."""
        if not self.try_acquire():
            raise LockHeld(str(self.path), self.holder_pid())
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def holder_pid(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None


def daemon_alive(database: Path) -> bool:
    """True when some process holds the daemon lock of this database."""
    if not lock_path(database).exists():
        return False
    probe = DaemonLock(database)
    try:
        if probe.try_acquire():
            probe.release()
            return False
    except OSError:  # cannot open the lock file (permissions): assume the daemon is there
        return True
    return True
