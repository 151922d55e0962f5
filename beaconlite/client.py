"""The CLI's requests to a running daemon, through the database: trigger and cancel.

The daemon takes requests on its tick (every second) and answers in the same row.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from beaconlite import reaper, store, timing
from beaconlite.errors import Refused, StoreError
from beaconlite.lock import daemon_alive
from beaconlite.places import is_postgres
from beaconlite.statuses import RUNNING


def poll(predicate, timeout: float, interval: float | None = None):
    """predicate() until truthy or timeout; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(timing.CLI_POLL if interval is None else interval)


def ask_daemon(
    kind: str,
    job: str | None = None,
    run_id: int | None = None,
    answer_within: float = 0.0,
    node: int | None = None,
):
    """Write a request for the daemon and wait for its answer (it ticks every second);
    ``answer_within``: how much longer than a take the answer may need (a reload); ``node``:
    for that node of a cluster alone."""
    request = store.add_request(kind, time.time(), job=job, run_id=run_id, node=node)

    def answered():
        row = store.get_request(request)
        return row if row is not None and row.answer is not None else None

    answer = poll(answered, timing.REQUEST_TAKE_WAIT)
    if not answer:
        if store.withdraw_request(request):
            raise Refused(f"the daemon did not take the request within {timing.REQUEST_TAKE_WAIT:g} s")
        answer = poll(answered, timing.REQUEST_TAKE_WAIT)  # taken just now: its answer is on the way
    if not answer and answer_within:
        answer = poll(answered, answer_within)
    if not answer:
        waited = 2 * timing.REQUEST_TAKE_WAIT + answer_within
        raise Refused(f"the daemon took the request but did not answer within {waited:g} s")
    return answer


def require_daemon(path: Path) -> None:
    # SQLite: the lock file answers before the database is opened; PostgreSQL: the leases in it.
    if is_postgres(path):
        alive = store.open_for_changes(path) and daemon_alive(path)
    else:
        alive = daemon_alive(path) and store.open_for_changes(path)
    if not alive:
        raise Refused(f"no daemon is running on {path}")


def wait_for_end(run_id: int, timeout: float | None) -> str:
    status = poll(
        lambda: (s := store.run_status(run_id)) != RUNNING and s,
        timeout if timeout is not None else float("inf"),
        0.1,
    )
    return status or RUNNING


def cancel(path: Path, run_id: int) -> str:
    """Stop a live run wherever it runs; its final status (waits up to 15 s for it)."""
    store.open_for_changes(path)
    status = store.run_status(run_id)
    if status is None:
        raise Refused(f"no run with id {run_id}")
    if status != RUNNING:
        raise Refused(f"run {run_id} is not live (it is {status})")
    run = store.Run.get_by_id(run_id)
    owner = store.instances([run.instance_id]).get(run.instance_id)
    host, now = socket.gethostname(), time.time()
    alive = daemon_alive(path)
    if store.is_postgres():
        now = store.nodes.database_clock()  # leases are judged by the database's clock
    if reaper.cancel_orphan(run_id, now, host, daemon_lock_free=not alive):
        pass  # nobody runs it any more: recorded here
    elif owner is not None and owner.kind == "foreground" and owner.host == host:
        os.kill(owner.pid, signal.SIGINT)  # `beaconlite run` cancels its run on Ctrl-C
    elif alive:
        answer = ask_daemon("cancel", run_id=run_id)
        if answer.answer == "refused":
            raise Refused(answer.error)
    else:
        raise Refused(f"run {run_id} belongs to a process on {owner.host if owner else '?'}")
    return wait_for_end(run_id, timing.CANCEL_WAIT)


# -- pause, resume, reload -------------------------------------------------------------------


def _known_job(path: Path, name: str, config) -> None:
    if config is not None:
        if config.job(name) is None:
            known = ", ".join(j.name for j in config.jobs) or "none"
            raise Refused(f"no job named {name!r} in {config.path} (jobs: {known})")
    elif name not in {s.name for s in store.job_states()}:
        raise Refused(f"no job named {name!r} among the jobs the daemon on {path} published")


def _open_existing(path: Path) -> None:
    if not store.open_for_changes(path):
        raise StoreError(f"no database yet at {path} (the daemon creates it at its first start)")


def pause(path: Path, name: str, config, tz) -> str:
    """Pause a job, with or without a daemon: no run of it starts once this has returned."""
    from beaconlite.invocation import user_at_host
    from beaconlite.render import local

    _open_existing(path)
    _known_job(path, name, config)
    paused = store.pause_job(name, time.time(), user_at_host())
    if paused is None:
        current = store.paused_jobs()[name]
        return f"{name} was already paused (since {local(current.paused_at, tz)} by {current.paused_by})"
    return f"paused {name}: no slot of it fires until `beaconlite resume {name}`"


def resume(path: Path, name: str, config) -> str:
    _open_existing(path)
    _known_job(path, name, config)
    if not store.resume_job(name, time.time()):
        return f"{name} was not paused"
    return f"resumed {name}: its next slot fires (the slots it missed while paused are not caught up)"


def reload(path) -> str:
    """Ask the running daemon (every node of a cluster) to reload; what changed, or Refused
    with why not."""
    require_daemon(path)
    wait = timing.IMPORT_TIMEOUT + 2 * timing.TICK
    if not store.is_postgres():
        answer = ask_daemon("reload", answer_within=wait)
        if answer.answer == "refused":
            raise Refused(f"reload refused, the daemon keeps its config: {answer.error}")
        return f"reloaded: {answer.detail}"
    lines, refused = [], False
    for node in store.nodes.living_daemons():  # each node answers for itself
        who = f"node {node.id} (pid {node.pid} on {node.host})"
        try:
            answer = ask_daemon("reload", answer_within=wait, node=node.id)
        except Refused as e:
            lines.append(f"{who}: {e}")
            refused = True
            continue
        if answer.answer == "refused":
            lines.append(f"{who}: reload refused, it keeps its config: {answer.error}")
            refused = True
        else:
            lines.append(f"{who}: reloaded: {answer.detail}")
    if refused:
        raise Refused("; ".join(lines))
    return "\n".join(lines)
