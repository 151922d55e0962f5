"""One thread rings every run's timed actions, in time order, whatever each action does."""

from __future__ import annotations

import threading
import time

from beaconlite.alarms import Alarms


def test_alarms_ring_in_time_order_on_one_thread_and_a_cancelled_one_never_rings():
    alarms, rung, done = Alarms("test-alarms"), [], threading.Event()
    before = threading.active_count()
    for delay, name in [(0.3, "c"), (0.1, "a"), (0.2, "b"), (0.25, "never")]:
        alarm = alarms.after(delay, rung.append, name)
        if name == "never":
            alarms.cancel(alarm)
    alarms.after(0.35, done.set)
    assert threading.active_count() == before + 1  # one thread, however many alarms
    assert done.wait(3)
    assert rung == ["a", "b", "c"]
    assert alarms.pending() == 0


def test_a_failing_action_does_not_stop_the_others(caplog):
    alarms, done = Alarms("test-alarms"), threading.Event()
    alarms.after(0.0, lambda: 1 / 0)
    alarms.after(0.05, done.set)
    assert done.wait(3)
    assert "a timed action failed" in caplog.text


def test_cancelled_alarms_do_not_pile_up():
    """A deadline is cancelled when its run ends, usually long before it is due: a day of
    bursts must not keep every one of them."""
    alarms = Alarms("test-alarms")
    for _ in range(10_000):
        alarms.cancel(alarms.after(3600, time.time))
    assert alarms.pending() == 0
    assert len(alarms._heap) <= 200


def test_an_earlier_alarm_wakes_the_thread_from_a_later_one():
    alarms, done, rung = Alarms("test-alarms"), threading.Event(), threading.Event()
    alarms.after(60, time.time)
    alarms.after(0.0, rung.set)  # once it has rung, the thread sleeps towards the 60 s one
    assert rung.wait(3)
    t0 = time.monotonic()
    alarms.after(0.05, done.set)
    assert done.wait(3) and time.monotonic() - t0 < 1
