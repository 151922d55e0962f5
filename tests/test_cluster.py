"""Three real daemon processes on one real PostgreSQL (SPEC 11), and the faults a cluster
must survive: a node killed mid-run, a node frozen past its lease, PostgreSQL restarted
under them, a node whose clock is 30 s off, three nodes starting at once, a cancel from a
machine with no daemon.

Every job appends "job slot pid run_id" to a file when it starts: the record of what really
executed, whatever the database says. After each fault: no slot executed twice, no slot
without a row, no row left running, and a dead node's runs flipped within orphan_after
plus 2 s."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import DaemonProcess, wait_for

ORPHAN_AFTER = 3.0
JOBS = 4


class Node(DaemonProcess):
    def start(self, wait_ready: bool = True) -> Node:
        starts = self.count("daemon.start")
        self.log_file = open(self.log_path, "a")  # noqa: SIM115 - closed by stop() / kill9()
        command = [sys.executable, "-m", "beaconlite", "-c", str(self.config), "daemon"]
        self.proc = subprocess.Popen(command, stdout=self.log_file, stderr=subprocess.STDOUT, env=self.env)
        if wait_ready:
            wait_for(lambda: self.count("daemon.start") > starts or self.proc.poll() is not None, 20)
            assert self.proc.poll() is None, self.log()
        return self


class Cluster:
    def __init__(self, server, url: str, tmp: Path, work: float):
        self.server, self.url, self.tmp = server, url, tmp
        self.effects = tmp / "effects"
        self.config = tmp / "beaconlite.toml"
        jobs = "".join(
            f'[[jobs]]\nname = "j{i}"\nschedule = "every 1s"\nrun = "jobs:effect"\n'
            f'params = {{file = "{self.effects}", work = {work}}}\n'
            for i in range(JOBS)
        )
        self.config.write_text(
            f'[daemon]\ndatabase = "{url}"\npython_path = ["{Path(__file__).parent}"]\n'
            f'heartbeat_interval = "0.5s"\norphan_after = "{ORPHAN_AFTER}s"\nreaper_interval = "1s"\n'
            f'abort_grace = "1s"\nlog_format = "json"\n{jobs}'
        )
        self.nodes: list[Node] = []
        self.env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}

    def node(self, env: dict | None = None) -> Node:
        log = self.tmp / f"node{len(self.nodes)}.log"
        node = Node(self.config, None, log, {**self.env, **(env or {})})
        self.nodes.append(node)
        return node

    def sql(self, statement: str, params=()) -> list:
        return self.server.sql(self.url, statement, params)

    def executions(self) -> list[tuple[str, float, int, int]]:
        if not self.effects.exists():
            return []
        rows = []
        for line in self.effects.read_text().splitlines():
            job, slot, pid, run_id = line.split()
            rows.append((job, round(float(slot), 3), int(pid), int(run_id)))
        return rows

    def instance_of(self, node: Node) -> int:
        return self.sql(
            "SELECT max(id) FROM instance WHERE pid = %s AND stopped_at IS NULL", (node.proc.pid,)
        )[0][0]

    def stop_all(self) -> None:
        for node in self.nodes:
            if node.proc and node.proc.poll() is None:
                node.stop()

    def check(self, start: float, end: float) -> None:
        """The cluster's promise over the slots in [start, end]: each executed at most once,
        each with a row, and nothing left running."""
        executed = Counter((job, slot) for job, slot, _, _ in self.executions())
        twice = {key: n for key, n in executed.items() if n > 1}
        assert twice == {}, f"slots executed more than once: {twice}"
        rows = self.sql("SELECT job, scheduled_at, slots, last_slot_at FROM run WHERE trigger != 'manual'")
        covered = set()
        for job, slot, slots, last in rows:
            first = round(slot)
            covered |= {(job, s) for s in range(first, round(last if slots > 1 else slot) + 1)}
        missing = [
            (f"j{i}", s)
            for i in range(JOBS)
            for s in range(int(start) + 1, int(end))
            if (f"j{i}", s) not in covered
        ]
        assert missing == [], f"slots without a row: {missing[:10]} ({len(missing)})"
        per_slot = Counter((job, round(slot), attempt) for job, slot, attempt in self.sql(
            "SELECT job, scheduled_at, attempt FROM run WHERE trigger != 'manual'"
        ))  # fmt: skip
        assert max(per_slot.values()) == 1
        running = self.sql("SELECT id, job, instance_id FROM run WHERE status = 'running'")
        assert running == [], f"rows left running: {running}"


@pytest.fixture
def cluster(pg_server, pg_url, tmp_path):
    made = []

    def make(work: float = 0.2) -> Cluster:
        c = Cluster(pg_server, pg_url, tmp_path, work)
        made.append(c)
        return c

    yield make
    for c in made:
        for node in c.nodes:
            if node.proc and node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait()


def db_now(c: Cluster) -> float:
    return c.sql("SELECT extract(epoch from clock_timestamp())::float8")[0][0]


def wait_stopped(c: Cluster) -> None:
    """After the nodes stop, rows still running belong to nobody: wait for none (a stop
    records its ends; a killed node's rows were flipped by its peers)."""
    wait_for(lambda: not c.sql("SELECT 1 FROM run WHERE status = 'running'"), 10, what="no running rows")


def test_three_nodes_starting_at_once_on_an_empty_database_run_each_slot_once(cluster, cli):
    c = cluster()
    nodes = [c.node() for _ in range(3)]
    for node in nodes:
        node.start(wait_ready=False)
    wait_for(lambda: all(n.count("daemon.start") for n in nodes), 20, what="three nodes started")
    start = time.time()
    assert c.sql("SELECT version FROM beaconlite_schema") == [(8,)]  # migrated once
    wait_for(lambda: time.time() > start + 5, 7)
    result = cli("--database", c.url, "status", "--json")
    states = [(n["state"], n["housekeeper"]) for n in result.json()["nodes"]]
    assert sorted(states) == [("running", False), ("running", False), ("running", True)]
    assert result.json()["daemon"]["state"] == "running"
    reload = cli("-c", c.config, "reload")
    assert reload.code == 0 and reload.out.count("reloaded:") == 3, reload.out + reload.err
    end = time.time()
    c.stop_all()
    wait_stopped(c)
    c.check(start, end)
    pids = {pid for _, _, pid, _ in c.executions()}
    assert len(pids) >= 2  # the work spreads: every node fires, the first insert wins


def test_a_node_killed_mid_run_has_its_runs_flipped_and_no_slot_runs_twice(cluster):
    c = cluster(work=1.5)
    nodes = [c.node().start() for _ in range(3)]
    start = time.time()
    victim = wait_for(
        lambda: next((n for n in nodes if c.sql(
            "SELECT 1 FROM run r JOIN instance i ON i.id = r.instance_id "
            "WHERE r.status = 'running' AND i.pid = %s", (n.proc.pid,))), None),
        10,
        what="a node with a live run",
    )  # fmt: skip
    victim_id = c.instance_of(victim)
    victim.kill9()
    killed_at = time.monotonic()
    wait_for(
        lambda: not c.sql("SELECT 1 FROM run WHERE status = 'running' AND instance_id = %s", (victim_id,)),
        ORPHAN_AFTER + 4,
        what="the dead node's runs flipped",
    )
    assert time.monotonic() - killed_at <= ORPHAN_AFTER + 2.0
    reasons = c.sql("SELECT status, error FROM run WHERE instance_id = %s AND finished_at IS NOT NULL "
                    "AND error LIKE 'orphaned%%'", (victim_id,))  # fmt: skip
    assert reasons and all(s == "timeout" and "lost its lease" in e for s, e in reasons)
    time.sleep(3)
    end = time.time()
    c.stop_all()
    wait_stopped(c)
    c.check(start, end)


def test_a_frozen_node_is_fenced_and_writes_nothing_after_its_lease(cluster):
    c = cluster(work=1.0)
    nodes = [c.node().start() for _ in range(3)]
    start = time.time()
    frozen = nodes[0]
    wait_for(lambda: c.instance_of(frozen), 5)
    old = c.instance_of(frozen)
    frozen.signal(signal.SIGSTOP)
    wait_for(
        lambda: c.sql(
            "SELECT 1 FROM instance WHERE id = %s AND lease_until < extract(epoch from clock_timestamp())",
            (old,),
        ),  # fmt: skip
        ORPHAN_AFTER + 3,
        what="the frozen node's lease to expire",
    )
    wait_for(lambda: not c.sql("SELECT 1 FROM run WHERE status = 'running' AND instance_id = %s", (old,)), 4)
    lease_end = c.sql("SELECT lease_until FROM instance WHERE id = %s", (old,))[0][0]
    frozen.signal(signal.SIGCONT)
    wait_for(lambda: frozen.count("cluster.fenced") == 1, 5, what="the node to fence itself")
    wait_for(lambda: frozen.count("cluster.join") == 1, 5, what="the node to join again")
    time.sleep(2)
    end = time.time()
    # Nothing of the old instance after its lease: no run started, no step, no end it wrote.
    late = c.sql(
        "SELECT id, status, error FROM run WHERE instance_id = %s AND (started_at > %s OR "
        "(finished_at > %s AND (error IS NULL OR error NOT LIKE 'orphaned%%')))",
        (old, lease_end, lease_end),
    )
    assert late == []
    steps = c.sql(
        "SELECT s.id FROM step s JOIN run r ON r.id = s.run_id WHERE r.instance_id = %s "
        "AND (s.started_at > %s OR (s.finished_at > %s AND s.status NOT IN ('timeout', 'skipped')))",
        (old, lease_end, lease_end),
    )
    assert steps == []
    c.stop_all()
    wait_stopped(c)
    c.check(start, end)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgresql_restarted_under_the_cluster_loses_nothing_and_runs_nothing_twice(
    cluster, pg_server, mode
):
    c = cluster(work=0.8)
    [c.node().start() for _ in range(3)]
    start = time.time()
    wait_for(lambda: c.sql("SELECT 1 FROM run WHERE status = 'running'"), 5, what="a run in flight")
    pg_server.restart(mode)
    time.sleep(4)  # fires, ends and heartbeats meet the restart and recover
    end = time.time()
    successes = c.sql("SELECT count(*) FROM run WHERE status = 'success'")[0][0]
    assert successes > 0
    # Every run succeeded, its end recorded with its true status once the server was back
    # (or was a slot accounted for as skipped while writes could not land).
    assert {s for (s,) in c.sql("SELECT DISTINCT status FROM run")} <= {"success", "skipped", "running"}
    assert c.sql("SELECT count(*) FROM run WHERE error LIKE 'orphaned%%'") == [(0,)]  # nobody died
    for node in c.nodes:
        assert node.proc.poll() is None, node.log()
    c.stop_all()
    wait_stopped(c)
    c.check(start, end)


class Watcher(threading.Thread):
    """Tails the executions file, noting when (by this machine's true clock) each appeared."""

    def __init__(self, c: Cluster):
        super().__init__(daemon=True)
        self.c, self.seen, self.stopping = c, {}, threading.Event()

    def run(self):
        while not self.stopping.is_set():
            for job, slot, _, _ in self.c.executions():
                self.seen.setdefault((job, slot), time.time())
            time.sleep(0.01)


# libfaketime, preloaded into the daemon itself (the `faketime` wrapper forks the daemon, and
# a signal to the wrapper never reaches it).
FAKETIME = next(iter(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")), None)


@pytest.mark.skipif(FAKETIME is None, reason="libfaketime is not installed (apt install faketime)")
@pytest.mark.parametrize("skew", ["+30s", "-30s"])
def test_a_node_whose_clock_is_30s_off_neither_starts_early_nor_records_false_times(cluster, skew):
    """The node's clock is wrong by 30 s; its runs start by the database's clock, and every
    time it records is the database's."""
    c = cluster(work=0.1)
    # The wall clock only: monotonic time stays true, as when NTP is wrong.
    wrong = {"LD_PRELOAD": FAKETIME, "FAKETIME": skew, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    skewed = c.node(env=wrong).start()
    c.node().start()
    watcher = Watcher(c)
    watcher.start()
    start = time.time()
    wait_for(lambda: skewed.count("clock.database_offset") == 1, 5, what="the clock warning")
    time.sleep(5)
    watcher.stopping.set()
    end = time.time()
    early = {key: round(key[1] - seen, 3) for key, seen in watcher.seen.items() if seen < key[1] - 0.05}
    assert early == {}, f"runs that started before their slot: {early}"
    times = c.sql(
        "SELECT started_at - scheduled_at FROM run WHERE started_at IS NOT NULL AND trigger = 'schedule'"
    )
    # Times are the database's: never before the slot. A slow clock's own fires come late
    # (its peers fire on time), and are recorded as late as they truly were.
    late_bound = 5 if skew.startswith("+") else 31
    assert times and all(-0.05 < lag < late_bound for (lag,) in times), times
    c.stop_all()
    wait_stopped(c)
    c.check(start, end)


def test_a_cancel_from_a_machine_with_no_daemon_reaches_the_node_running_the_run(cluster, cli, tmp_path):
    c = cluster(work=0.1)
    config = c.config.read_text().replace(
        '[[jobs]]\nname = "j0"', '[[jobs]]\nname = "long"\ntimeout = "1m"', 1
    )
    c.config.write_text(config.replace("work = 0.1}", "work = 30}", 1))
    [c.node().start() for _ in range(2)]
    run_id = wait_for(
        lambda: (c.sql("SELECT id FROM run WHERE job = 'long' AND status = 'running'") or [[None]])[0][0], 5
    )
    result = cli("--database", c.url, "cancel", run_id)  # this process runs no daemon
    assert result.code == 0, result.err
    assert c.sql("SELECT status FROM run WHERE id = %s", (run_id,)) == [("cancelled",)]
    c.stop_all()
    wait_stopped(c)


def test_a_slot_no_node_has_room_for_is_recorded_once_as_skipped(cluster):
    """Two nodes of one run each (max_concurrent_runs = 1), one held by a long run: most
    slots of the other jobs find no node with room. Nobody claims them; the housekeeper
    records each once, as skipped, after misfire_grace."""
    c = cluster(work=0.1)
    text = c.config.read_text().replace('log_format = "json"', 'log_format = "json"\nmax_concurrent_runs = 1')
    text = text.replace('schedule = "every 1s"', 'schedule = "every 1s"\nmisfire_grace = "1s"')
    c.config.write_text(text.replace("work = 0.1}", "work = 60}", 1))  # j0 holds its node
    [c.node().start() for _ in range(2)]
    start = time.time()
    time.sleep(7)
    end = time.time()
    unclaimed = c.sql("SELECT count(*) FROM run WHERE error LIKE 'unclaimed%%'")[0][0]
    assert unclaimed > 0
    c.stop_all()
    wait_stopped(c)
    # The last seconds' slots were not yet past misfire_grace + a housekeeping pass at the stop.
    c.check(start, end - 3)
