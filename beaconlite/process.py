"""A command's process group: start it in its own session, read its output into a bounded
tail, signal the whole group. What the runner's abort and the command kind share."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Callable, Mapping

from beaconlite import timing

OUTPUT_TAIL = 64 * 1024  # bytes of output kept with a run (SPEC section 3)


class Tail:
    """The end of a stream in bounded memory: at least its last ``limit`` bytes, and up to
    ``limit`` more before them, so that a secret crossing the final cut is still whole
    when the text is redacted (and only then cut to ``limit``: see ``last_bytes``)."""

    def __init__(self, limit: int = OUTPUT_TAIL):
        self.limit = limit
        self.data = bytearray()
        self.dropped = False  # the stream's beginning is gone

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * self.limit:
            del self.data[: len(self.data) - self.limit]
            self.dropped = True

    def text(self) -> tuple[str, bool]:
        """(what is kept, decoded; whether the stream's beginning was dropped)."""
        return bytes(self.data).decode("utf-8", "replace"), self.dropped


def last_bytes(text: str, limit: int = OUTPUT_TAIL) -> str:
    """The end of ``text`` that fits in ``limit`` bytes of UTF-8 (never half a character)."""
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[-limit:].decode("utf-8", "ignore")


def kill_group(pgid: int, sig: int) -> None:
    """Signal a process group; one that is gone already is no error."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def spawn(
    argv: tuple[str, ...] | str, shell: bool, cwd: str | None, env: Mapping[str, str]
) -> subprocess.Popen:
    """Start a command in a process group of its own (one killpg reaches everything it
    starts), output and errors on one pipe, no stdin. OSError when it cannot start."""
    return subprocess.Popen(
        argv,
        shell=shell,
        cwd=cwd,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def pump(proc: subprocess.Popen, tail: Tail, between_reads: Callable[[], None]) -> int:
    """Read output until the process exits (and its pipe closes, or lingers too long);
    ``between_reads`` is called at least every 50 ms. The exit code (negative: a signal)."""
    fd = proc.stdout.fileno()
    exited_at = None
    while True:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break  # EOF: every writer is gone
            tail.add(chunk)
        if exited_at is None and proc.poll() is not None:
            exited_at = time.monotonic()
        if exited_at is not None and time.monotonic() - exited_at > timing.PIPE_LINGER:
            break  # a grandchild holds the pipe: do not let it hold the run
        between_reads()
    return proc.wait()
