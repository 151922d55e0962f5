"""The daemon lock: exclusive, seen from other processes, never inherited by a child."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from beaconlite.errors import LockHeld
from beaconlite.lock import DaemonLock, daemon_alive

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from beaconlite.lock import DaemonLock
    lock = DaemonLock(Path(sys.argv[1]))
    lock.acquire()
    print("held", flush=True)
    sys.stdin.read()
    """
)


def test_held_by_another_process_then_free(tmp_path):
    db = tmp_path / "b.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert daemon_alive(db)
        mine = DaemonLock(db)
        assert not mine.try_acquire()
        try:
            mine.acquire()
        except LockHeld as e:
            assert e.pid == holder.pid and f"pid {holder.pid}" in str(e)
        else:
            raise AssertionError("acquired a held lock")
    finally:
        holder.stdin.close()
        holder.wait(5)
    assert not daemon_alive(db)
    mine = DaemonLock(db)
    assert mine.try_acquire() and daemon_alive(db)
    mine.release()


def test_looking_never_drops_our_own_lock(tmp_path):
    """A POSIX lock is dropped when its process closes any descriptor of the file: the
    holder answers from memory and never opens the file again."""
    db = tmp_path / "b.db"
    lock = DaemonLock(db)
    lock.acquire()
    try:
        for _ in range(3):
            assert daemon_alive(db)  # asked in the holding process
            assert lock.holder_pid() == os.getpid()
        code = "import sys, pathlib, beaconlite.lock as l; print(l.daemon_alive(pathlib.Path(sys.argv[1])))"
        probe = subprocess.run(
            [sys.executable, "-c", code, str(db)], capture_output=True, text=True, timeout=10
        )
        assert probe.stdout.strip() == "True"
    finally:
        lock.release()


def test_a_forked_child_does_not_hold_the_lock(tmp_path):
    db = tmp_path / "b.db"
    lock = DaemonLock(db)
    lock.acquire()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child outlives the parent's lock
        os.close(write)
        os.read(read, 1)
        os._exit(0)
    try:
        lock.release()  # as if the parent had died
        again = subprocess.run(
            [sys.executable, "-c", HOLD.replace("sys.stdin.read()", ""), str(db)],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert again.returncode == 0 and again.stdout.strip() == "held"  # the child does not keep it
    finally:
        os.close(write)
        os.waitpid(pid, 0)
