"""A command's process group: bounded output tail, pumping past a lingering grandchild,
signalling the whole group (real processes)."""

from __future__ import annotations

import os
import signal
import time

from beaconlite import process, timing


def test_tail_keeps_the_end_in_bounded_memory_and_says_what_it_dropped():
    tail = process.Tail(limit=10)
    tail.add(b"0123")
    assert tail.text() == ("0123", False)
    for i in range(1000):
        tail.add(f"{i:04d}".encode())
        assert len(tail.data) <= 2 * 10 + 4
    text, dropped = tail.text()
    assert dropped and 10 <= len(text) <= 24 and text.endswith("09980999")
    assert process.last_bytes(text, 10) == text[-10:]


def test_last_bytes_never_cuts_a_character_in_half():
    assert process.last_bytes("aé" * 3, 4) == "aé"  # the 4 last bytes begin inside an "é"
    assert process.last_bytes("short", 10) == "short"


def test_pump_reads_until_exit_and_stops_waiting_on_a_grandchild(monkeypatch):
    monkeypatch.setattr(timing, "PIPE_LINGER", 0.2)
    proc = process.spawn(["sh", "-c", "echo one; sleep 30 & echo two"], False, None, {})
    ticks = []
    tail = process.Tail()
    t0 = time.monotonic()
    code = process.pump(proc, tail, lambda: ticks.append(1))
    assert code == 0 and tail.text() == ("one\ntwo\n", False)
    assert time.monotonic() - t0 < 2  # the grandchild holding the pipe did not hold us
    assert ticks  # called between reads
    process.kill_group(proc.pid, signal.SIGKILL)
    proc.stdout.close()


def test_spawn_gives_the_command_its_own_group_and_env():
    proc = process.spawn("echo $BEACON_TEST; ps -o pgid= -p $$", True, "/", {"BEACON_TEST": "x1"})
    out = proc.communicate(timeout=5)[0].decode().split()
    assert out[0] == "x1" and int(out[1]) == proc.pid != os.getpgid(0)


def test_kill_group_of_a_gone_group_is_no_error():
    proc = process.spawn(["true"], False, None, {})
    proc.wait()
    proc.stdout.close()
    process.kill_group(proc.pid, signal.SIGKILL)  # no ProcessLookupError
