"""The cluster's rules in the store, on a real PostgreSQL (SPEC 11): leases by the database's
clock, fencing, requests taken by exactly one node, the housekeeping lease, a dead node's
retries, the node list."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from conftest import wait_for

from beaconlite import pages, reaper, store
from beaconlite.errors import RunEnded
from beaconlite.places import PostgresURL
from beaconlite.store import nodes

HOST = socket.gethostname()
SHORT = 0.4  # orphan_after of the instances that are let die


@pytest.fixture
def pg(pg_server, pg_url):
    store.open_writer(PostgresURL(pg_url))
    yield pg_server, pg_url
    store.close()


def register(orphan_after: float = 60.0, kind: str = "daemon", pid: int = 4242) -> int:
    return store.register_instance(kind, pid, HOST, "v", orphan_after, time.time())


def live_run(instance: int, job: str = "j", slot: float = 100.0) -> int:
    return store.start_run(job, "schedule", slot, 1, time.time() + 60, instance, time.time())


def lapse(instance: int) -> None:
    wait_for(lambda: instance in nodes.lapsed([instance]), 5, what="the lease to expire")


def test_a_lease_expires_by_the_database_clock_and_its_node_is_fenced(pg):
    doomed, alive, stopped = register(SHORT), register(), register()
    runs = {
        name: live_run(i, name) for name, i in (("doomed", doomed), ("alive", alive), ("stopped", stopped))
    }
    step = store.start_step(runs["doomed"], "s", time.time())
    store.stop_instance(stopped, time.time())
    lapse(doomed)
    orphans = {o.job: o.reason for o in reaper.find_orphans(time.time(), HOST, daemon_lock_free=False)}
    assert orphans == {
        "doomed": f"orphaned: node {doomed} (pid 4242 on {HOST}) lost its lease",
        "stopped": f"orphaned: daemon pid 4242 on {HOST} stopped",
    }
    # Fenced: no heartbeat, no step, no end, no new run of the dead instance lands.
    with pytest.raises(nodes.Fenced):
        store.heartbeat(doomed, [runs["doomed"]], time.time())
    with pytest.raises(RunEnded):
        store.finish_step(runs["doomed"], step, "success", None, time.time())
    with pytest.raises(RunEnded):
        store.start_step(runs["doomed"], "late", time.time())
    assert store.finish_run(runs["doomed"], "success", time.time()) is False
    with pytest.raises(nodes.Fenced):
        live_run(doomed, "doomed", slot=200.0)
    assert store.run_status(runs["doomed"]) == "running"  # until a peer's reaper flips it
    assert store.heartbeat(alive, [runs["alive"]], time.time()) == set()
    assert store.finish_run(runs["alive"], "success", time.time()) is True


def test_a_trigger_is_taken_by_exactly_one_node(pg):
    """Four nodes take at the same instant, twenty rounds: every request once."""
    me = [register() for _ in range(4)]
    ids, taken = [], []
    for _ in range(20):
        ids += [store.add_request("trigger", time.time(), job=f"j{i}") for i in range(10)]
        barrier = threading.Barrier(len(me))

        def take(node, barrier=barrier):
            barrier.wait()
            taken.extend(r.id for r in store.take_requests(time.time(), node))
            store.close()

        threads = [threading.Thread(target=take, args=(node,)) for node in me]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(taken) == sorted(ids)  # every one taken, none twice
    assert {r.taken_by for r in store.Request.select()} <= set(me)


def test_a_cancel_goes_to_the_node_running_the_run_or_to_anyone_when_it_is_dead(pg):
    a, b, short = register(), register(), register(SHORT)
    on_a, on_short = live_run(a, "x"), live_run(short, "y")
    to_a = store.add_request("cancel", time.time(), run_id=on_a)
    to_short = store.add_request("cancel", time.time(), run_id=on_short)
    reload_a = store.add_request("reload", time.time(), node=a)
    assert [r.id for r in store.take_requests(time.time(), b)] == []  # a lives; short still holds its lease
    lapse(short)
    assert [r.id for r in store.take_requests(time.time(), b)] == [to_short]
    assert [r.id for r in store.take_requests(time.time(), a)] == [to_a, reload_a]


def test_one_housekeeper_at_a_time_and_another_once_its_lease_passes(pg):
    a, b = register(), register()
    assert nodes.hold_lease(nodes.HOUSEKEEPING, a, SHORT) is True
    assert nodes.hold_lease(nodes.HOUSEKEEPING, b, SHORT) is False
    assert nodes.hold_lease(nodes.HOUSEKEEPING, a, SHORT) is True  # renewed
    assert nodes.lease_holder(nodes.HOUSEKEEPING) == a
    wait_for(lambda: nodes.hold_lease(nodes.HOUSEKEEPING, b, SHORT), 3, what="b to take over")
    assert nodes.lease_holder(nodes.HOUSEKEEPING) == b


def test_a_dead_nodes_retries_are_owed_until_a_peer_records_them(pg):
    dead, peer = register(SHORT), register()
    failed, orphaned, retried = live_run(dead, "a", 1.0), live_run(dead, "b", 2.0), live_run(dead, "c", 3.0)
    store.finish_run(failed, "error", time.time(), error="boom")
    store.finish_run(retried, "error", time.time(), error="boom")
    store.start_run("c", "retry", 3.0, 2, time.time() + 60, peer, time.time())  # its retry ran
    lapse(dead)
    reaper.reap(reaper.find_orphans(time.time(), HOST, daemon_lock_free=False), time.time())
    assert store.run_status(orphaned) == "timeout"  # flipped by a reaper: no verdict of its own
    assert [r.id for r in nodes.owed_retries(0.0, ("error", "timeout"))] == [failed]
    store.record_skipped("a", 1.0, "retry dropped", time.time(), trigger="retry", attempt=2)
    assert nodes.owed_retries(0.0, ("error", "timeout")) == []


def test_the_node_list_says_who_lives_who_keeps_the_house_and_escapes_on_the_page(pg):
    running = store.register_instance("daemon", 1, "<b>host</b>", "v", 60.0, time.time())
    dead = register(SHORT)
    stopped = register()
    store.stop_instance(stopped, time.time())
    live_run(running, "x")
    nodes.hold_lease(nodes.HOUSEKEEPING, running, 30)
    lapse(dead)
    listed = {n["id"]: n for n in store.cluster_nodes(heartbeat_interval=5.0)}
    assert {i: n["state"] for i, n in listed.items()} == {
        running: "running",
        dead: "dead",
        stopped: "stopped",
    }
    assert listed[running]["housekeeper"] and listed[running]["live_runs"] == 1
    assert not listed[dead]["housekeeper"] and listed[dead]["lease_until"] < time.time()
    page = pages.status_page(
        {
            "daemon": None,
            "state": "running",
            "database": "postgresql://x:***@h/db",
            "problems": [],
            "jobs": [],
            "strips": {},
            "live": [],
            "zones": {},
            "nodes": list(listed.values()),
        },
        None,
    )
    assert "&lt;b&gt;host&lt;/b&gt;" in page and "<b>host</b>" not in page
    assert page.count("data-node=") == 3 and "(housekeeper)" in page


def test_a_slot_this_node_could_not_record_is_skipped_even_after_a_peer_ran_a_later_one(pg, tmp_path):
    """The database refused this node's row for slot s; meanwhile a peer ran s+1 (and s+2).
    The ledger mark has moved past s, yet s still gets its row."""
    from beaconlite.config import load_config
    from beaconlite.loader import Code
    from beaconlite.runner import Runner
    from beaconlite.slots import Slots

    _, url = pg
    config_path = tmp_path / "c.toml"
    config_path.write_text(
        f'[daemon]\ndatabase = "{url}"\n[[jobs]]\nname = "tick"\nschedule = "every 1s"\n'
        "run = 'beaconlite.builtin:noop'\n"
    )
    config = load_config(config_path)
    me, peer = register(), register()
    slots = Slots(config, Runner(config, Code(), me))
    s = float(int(time.time())) - 3
    slots._defer("tick", [s], "connection refused")  # as a refused batch leaves it
    for later in (s + 1, s + 2):
        store.finish_run(
            store.start_run("tick", "schedule", later, 1, later + 60, peer, later), "success", later
        )
    slots.recover_unrecorded(s + 3)
    rows = {r.scheduled_at: r for r, _, _ in store.list_runs(job="tick", limit=10)}
    assert rows[s].status == "skipped" and "the database was not writable" in rows[s].error
    latest = [r for slot, r in sorted(rows.items()) if slot > s + 2]
    assert len(latest) == 1 and latest[0].started_at is not None  # the latest slot ran (its code here: none)


def test_a_run_id_handed_to_a_peer_after_a_lost_commit_is_not_written_by_its_old_owner(pg):
    """A failover to a replica that missed the last commits: this node's run row is gone
    and a peer's new run got its id. Our late end and steps must not land on the peer's run."""
    _, url = pg
    mine, peer = register(), register()
    run_id = live_run(mine, "lost", slot=1.0)
    step = store.start_step(run_id, "s", time.time(), instance_id=mine)
    pg[0].sql(
        url,
        "UPDATE run SET job = 'theirs', scheduled_at = 2.0, instance_id = %s WHERE id = %s",
        (peer, run_id),
    )
    with pytest.raises(RunEnded):
        store.finish_step(run_id, step, "success", None, time.time(), instance_id=mine)
    with pytest.raises(RunEnded):
        store.start_step(run_id, "late", time.time(), instance_id=mine)
    assert store.finish_run(run_id, "error", time.time(), error="mine", instance_id=mine) is False
    assert store.finish_run(run_id, "success", time.time(), instance_id=peer) is True
    assert store.get_run(run_id)[0].error is None


def test_the_cli_on_a_cluster_with_no_daemon_runs_here_and_refuses_what_needs_one(pg, cli, tmp_path):
    _, url = pg
    config = tmp_path / "beaconlite.toml"
    config.write_text(
        f'[daemon]\ndatabase = "{url}"\n[[jobs]]\nname = "a"\nrun = "beaconlite.builtin:selfcheck"\n'
    )
    ran = cli("-c", config, "run", "a")
    assert ran.code == 0 and "success" in ran.out, ran.err
    for command in (["trigger", "a"], ["reload"]):
        refused = cli("-c", config, *command)
        assert refused.code == 1 and "no daemon is running on postgresql://" in refused.err
    status = cli("-c", config, "status", "--json").json()
    assert status["daemon"]["state"] == "stopped" and status["nodes"] == []


def test_a_wake_up_that_meets_the_server_gone_keeps_its_slots_for_later(pg_server, pg_url, inproc_daemon):
    """The fires' first statement (the decision locks) fails: the slots wait as unrecorded
    ones and get their rows once the server is back, none dropped."""
    defaults = f'[daemon]\ndatabase = "{pg_url}"\nlog_format = "json"\nheartbeat_interval = "0.2s"\n'
    d = inproc_daemon(
        "[[jobs]]\nname = 'hourly'\nschedule = 'every 1h'\nrun = 'beaconlite.builtin:noop'\n", defaults
    )
    wait_for(lambda: d.housekeeper, 5, what="the start to finish")  # its first tick has run
    slot = float(int(time.time() // 3600) * 3600)  # this hour's slot, handed over as APScheduler would
    pg_server._ctl("-m", "fast", "-w", "stop")
    try:
        d._on_fires([("hourly", [slot])])
        assert d.slots.has_unrecorded()
    finally:
        pg_server.start()
    wait_for(lambda: pg_server.sql(pg_url, "SELECT status FROM run WHERE scheduled_at = %s", (slot,)), 10)
    d.request_stop()
    d.thread.join(30)


def test_two_nodes_deciding_about_one_job_at_once_take_turns(pg):
    """A trigger on one node and a fire on another: the second decision waits for the
    first to commit, and then counts its run (else both would see room)."""
    a, b = register(), register()
    a_claimed, seen = threading.Event(), {}

    def node_a():
        with store.batch():
            assert nodes.claim("j", 1.0, 1, a).others == ()
            seen["a_run"] = live_run(a, "j", slot=1.0)
            a_claimed.set()
            time.sleep(0.3)  # deciding, not committed yet
        store.close()

    def node_b():
        a_claimed.wait(5)
        started = time.monotonic()
        with store.batch():
            seen["b_others"] = nodes.claim("j", 2.0, 1, b).others
        seen["b_waited"] = time.monotonic() - started
        store.close()

    threads = [threading.Thread(target=node_a), threading.Thread(target=node_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen["b_others"] == (seen["a_run"],) and seen["b_waited"] >= 0.2


def test_a_paused_job_owes_no_unclaimed_slot(pg, tmp_path):
    """Nobody claims a paused job's slots: the housekeeper records none of them, nor those
    from before its last resume."""
    from beaconlite.config import load_config
    from beaconlite.loader import Code
    from beaconlite.runner import Runner
    from beaconlite.slots import Slots

    _, url = pg
    path = tmp_path / "c.toml"
    jobs = "".join(
        f'[[jobs]]\nname = "{name}"\nschedule = "every 1s"\nmisfire_grace = "1s"\n'
        'run = "beaconlite.builtin:noop"\n'
        for name in ("paused", "resumed")
    )
    path.write_text(f'[daemon]\ndatabase = "{url}"\n{jobs}')
    config = load_config(path)
    slots = Slots(config, Runner(config, Code(), register()))
    now = float(int(time.time()))
    store.pause_job("paused", now - 20, "ann@host")
    store.pause_job("resumed", now - 20, "ann@host")
    store.resume_job("resumed", now - 5.5)
    slots.record_unclaimed(now, since=now - 10.5)
    skipped = sorted((r.job, r.scheduled_at) for r, _, _ in store.list_runs(status="skipped", limit=50))
    assert skipped == [("resumed", now - s) for s in (5, 4, 3, 2, 1)]
