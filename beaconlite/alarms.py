"""One thread for every run's timed actions: its deadline, the SIGKILL after a SIGTERM, the
give-up ``abort_grace`` after an abort.

A ``threading.Timer`` per action costs a thread each: a burst of 10,000 runs would keep
20,000 threads alive. Here one thread sleeps until the earliest alarm. Alarms wait on the
monotonic clock, which stops while the machine sleeps; the daemon's tick compares elapsed
time with each deadline as well (``Runner.watch``), so an alarm is only ever the prompt path.
An action runs on this thread and must be short: an abort sets a flag and sends signals.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

from beaconlite import store

log = logging.getLogger(__name__)


class Alarm:
    __slots__ = ("due", "action", "args", "cancelled")

    def __init__(self, due: float, action: Callable, args: tuple):
        self.due, self.action, self.args, self.cancelled = due, action, args, False


class Alarms:
    def __init__(self, name: str):
        self._name = name
        self._ready = threading.Condition()
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()  # equal times ring in the order they were set
        self._cancelled = 0
        self._thread: threading.Thread | None = None

    def after(self, delay: float, action: Callable, *args) -> Alarm:
        """Call ``action(*args)`` ``delay`` seconds from now. RuntimeError when the alarm
        thread is not running and cannot start (threads exhausted)."""
        alarm = Alarm(time.monotonic() + max(0.0, delay), action, args)
        with self._ready:
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(target=self._ring, name=self._name, daemon=True)
                thread.start()
                self._thread = thread
            heapq.heappush(self._heap, (alarm.due, next(self._order), alarm))
            if self._heap[0][2] is alarm:
                self._ready.notify()
        return alarm

    def cancel(self, alarm: Alarm) -> None:
        with self._ready:
            if alarm.cancelled:
                return
            alarm.cancelled = True
            self._cancelled += 1
            # Most deadlines are cancelled long before they are due: drop them in bulk
            # rather than keep every run's deadline of the last half hour in the heap.
            if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def pending(self) -> int:
        with self._ready:
            return len(self._heap) - self._cancelled

    def _next(self) -> Alarm:
        with self._ready:
            while True:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                    self._cancelled -= 1
                if self._heap and self._heap[0][0] <= time.monotonic():
                    alarm = heapq.heappop(self._heap)[2]
                    alarm.cancelled = True  # rung: a later cancel() changes nothing
                    return alarm
                self._ready.wait(self._heap[0][0] - time.monotonic() if self._heap else None)

    def _ring(self) -> None:
        while True:
            alarm = self._next()
            try:
                alarm.action(*alarm.args)
            except Exception:  # a loop boundary: one failed action must not stop the others
                log.exception("a timed action failed: %r", alarm.action)
            finally:
                # A give-up writes the run's end: never keep that connection for the next
                # action, which may concern another database (a test, a foreground run).
                store.close()


# The process's one alarm thread for runs (the daemon's and a foreground run's).
runs = Alarms("run-alarms")
