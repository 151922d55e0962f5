"""The clocks. Wall time is read here, at the edges; durations use elapsed time.

Elapsed time counts time asleep (CLOCK_BOOTTIME on Linux); the monotonic clock does not.
Their difference is the time the machine spent suspended. Tests replace ``clock.elapsed``
and ``clock.monotonic`` to simulate a suspend without one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from beaconlite import timing
from beaconlite.durations import format_duration

_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)  # Linux only


_offset = 0.0  # a cluster node: the database's clock minus ours (SPEC 11)


def wall() -> float:
    """Seconds since the epoch (UTC); a cluster node's is the database's."""
    return time.time() + _offset


def follow(offset: float) -> None:
    """Keep the database's time from now on: ``offset`` seconds ahead of this machine's."""
    global _offset
    _offset = offset


def monotonic() -> float:
    return time.monotonic()


if _BOOTTIME is not None:

    def elapsed() -> float:
        """A clock that keeps counting while the machine sleeps."""
        return time.clock_gettime(_BOOTTIME)

else:  # macOS and others: the wall clock is the only clock that counts sleep

    def elapsed() -> float:
        return time.time()


HAS_BOOTTIME = _BOOTTIME is not None


@dataclass(frozen=True)
class Clocks:
    monotonic: float
    elapsed: float
    wall: float
    cpu: float = 0.0  # the process's CPU time, every thread's

    @classmethod
    def read(cls) -> Clocks:
        return cls(monotonic(), elapsed(), wall(), time.process_time())


def explain_gap(before: Clocks, after: Clocks, interval: float) -> str | None:
    """A suspend or a freeze between two readings of the clocks: why, or None."""
    d_mono = after.monotonic - before.monotonic
    # Linux: elapsed (CLOCK_BOOTTIME) minus monotonic is time suspended. Elsewhere the
    # wall clock is the only clock that counts sleep, so a wall jump reads as a suspend.
    if HAS_BOOTTIME:
        suspended = (after.elapsed - before.elapsed) - d_mono
    else:
        suspended = (after.wall - before.wall) - d_mono
    if suspended > timing.GAP:
        return f"the machine was suspended for {format_duration(suspended)}"
    # A frozen process (SIGSTOP, a paused VM) spends no CPU while the time passes; a busy
    # one (a burst of runs, each thread waiting its turn for the interpreter) spends it the
    # whole time: only the lateness its own work does not explain reads as a freeze.
    frozen = d_mono - interval - max(0.0, after.cpu - before.cpu)
    if frozen > timing.GAP:
        return f"the daemon was frozen for {format_duration(frozen)}"
    return None
