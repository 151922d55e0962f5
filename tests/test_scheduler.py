"""APScheduler, told only when: every due slot of a wake-up at once, and wake-ups on time."""

from __future__ import annotations

import threading
import time

from conftest import wait_for

from beaconlite.config import JobSpec
from beaconlite.scheduler import Scheduler


def every(name: str, schedule: str) -> JobSpec:
    return JobSpec(name=name, kind="python", run="beaconlite.builtin:noop", schedule=schedule, timezone="UTC")


def test_a_wake_up_hands_over_all_its_due_slots_and_a_slow_one_does_not_delay_the_next():
    """Recording a burst takes time; the next wake-up must still come at its slot, not that
    much later (the wait is counted from before the burst was recorded)."""
    handed: list[tuple[float, list[str]]] = []
    done = threading.Event()

    def on_fires(fires):
        handed.append((time.time(), sorted(name for name, _ in fires)))
        if len(handed) >= 3:
            done.set()
        time.sleep(0.3)  # a slow burst to record

    scheduler = Scheduler(on_fires)
    scheduler.sync(tuple(every(f"j{i}", "every 1s") for i in range(5)))
    scheduler.start()
    try:
        wait_for(done.is_set, 6, what="three wake-ups")
    finally:
        scheduler.shutdown()
    for at, names in handed:
        assert names == [f"j{i}" for i in range(5)]  # all five together, each time
        assert at - round(at) < 0.1, [a % 1 for a, _ in handed]  # on its second, not 0.3 s late
