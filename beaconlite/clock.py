"""The clocks. Wall time is read here, at the edges; durations use elapsed time.

Elapsed time counts time asleep (CLOCK_BOOTTIME on Linux); the monotonic clock does not.
Their difference is the time the machine spent suspended. Tests replace ``clock.elapsed``
and ``clock.monotonic`` to simulate a suspend without one.
"""

from __future__ import annotations

import time

_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)  # Linux only


def wall() -> float:
    """Seconds since the epoch (UTC)."""
    return time.time()


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
