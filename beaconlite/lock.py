"""The daemon lock: an exclusive POSIX record lock on a file next to the database.

A POSIX lock (``fcntl.lockf``) belongs to the process, so a job's forked child that outlives
a ``kill -9``ed daemon does not keep holding it (a ``flock`` would be shared with every
child). Its catch: closing *any* descriptor of the file drops the process's lock, so the
process holding it never opens the lock file again; "is it held here?" is answered from
memory. The file is never unlinked (unlinking a locked file lets a second process lock a
new inode at the same path); the holder's pid is written into it for diagnostics only.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys
from pathlib import Path

from beaconlite.errors import LockHeld

_held: dict[str, int] = {}  # lock file path -> descriptor, for the locks this process holds
# struct flock, whose field order differs: (format, index of l_type)
_FLOCK = ("qqihh", 3) if sys.platform == "darwin" else ("hhqqi", 0)


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
        if str(self.path) in _held:
            return False  # this process holds it already (a second opener would drop it)
        create_private_file(self.path, self.mode)
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.fd = fd
        _held[str(self.path)] = fd
        return True

    def acquire(self) -> None:
        """Take the lock or raise LockHeld naming the holder."""
        if not self.try_acquire():
            raise LockHeld(str(self.path), self.holder_pid())
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            _held.pop(str(self.path), None)
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None

    def holder_pid(self) -> int | None:
        if str(self.path) in _held:
            return os.getpid()
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None


def daemon_alive(database) -> bool:
    """True when some process holds the daemon lock of this database (PostgreSQL: when some
    daemon node holds its lease; the store must be open on it)."""
    from beaconlite.places import is_postgres

    if is_postgres(database):
        from beaconlite.store import nodes

        return bool(nodes.living_daemons())
    path = lock_path(database)
    if str(path) in _held:
        return True  # this process: never probe (closing the probe would drop our lock)
    if not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # cannot open the lock file (permissions): assume the daemon is there
        return True
    try:
        # F_GETLK: would anyone block an exclusive lock? Asked without taking one, so a
        # reader never makes a starting daemon find the lock busy.
        fmt, type_at = _FLOCK
        fields = [0] * 5
        fields[type_at], fields[type_at + 1 if type_at == 0 else 4] = fcntl.F_WRLCK, os.SEEK_SET
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(fmt, *fields))
        return struct.unpack(fmt, answer)[type_at] != fcntl.F_UNLCK
    except OSError:
        return True
    finally:
        os.close(fd)
