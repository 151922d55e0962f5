"""Orphans -> timeout: runs whose instance died, froze or slept too long.

A `running` row is orphaned when its instance is dead: for a daemon, its lock is free or
its heartbeat is older than the `orphan_after` it recorded; for a foreground `beaconlite run`,
its process no longer exists on this host or its heartbeat is stale. The daemon's own runs
are never judged by their heartbeat, only by their deadline. The daemon, `beaconlite reap`
and `beaconlite cancel` all ask ``find_orphans``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from beaconlite import store
from beaconlite.durations import format_duration
from beaconlite.statuses import CANCELLED, TIMEOUT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Orphan:
    id: int
    job: str
    started_at: float | None
    reason: str


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else
    return True


def _death(instance, now: float, host: str, daemon_lock_free: bool, lapsed: set[int] | None) -> str | None:
    """Why this instance is dead, or None while it lives. ``lapsed``: in a cluster, the
    instances whose lease has expired by the database's clock (their heartbeat's age by
    ours means nothing there)."""
    if instance is None:
        return "orphaned: its instance is unknown"
    kind = "daemon" if instance.kind == "daemon" else "foreground run"
    who = f"{kind} pid {instance.pid} on {instance.host}"
    if instance.stopped_at is not None:
        return f"orphaned: {who} stopped"
    if instance.kind == "foreground" and instance.host == host and not pid_alive(instance.pid):
        return f"orphaned: {who} is gone"
    if lapsed is not None:
        if instance.id in lapsed:
            return f"orphaned: node {instance.id} (pid {instance.pid} on {instance.host}) lost its lease"
        return None
    if instance.kind == "daemon" and daemon_lock_free:
        return f"orphaned: {who} stopped"
    age = now - instance.heartbeat_at
    if age > instance.orphan_after:
        return f"orphaned: {who} stopped heartbeating {format_duration(age)} ago"
    return None


@dataclass(frozen=True)
class Own:
    """The calling daemon's view of its own runs: judged by their deadline only."""

    instance: int
    serving: frozenset[int]  # runs a thread of ours still serves (or whose end is pending)
    grace: float  # abort_grace: a run is ours to end until its deadline plus this


def find_orphans(
    now: float,
    host: str,
    *,
    daemon_lock_free: bool,
    own: Own | None = None,
    older_than: float = 0.0,
    only: int | None = None,
) -> list[Orphan]:
    """Running rows that nothing runs any more: the one orphan rule.

    A row of another instance is orphaned when that instance is dead (see ``_death``).
    ``daemon_lock_free``: no daemon holds the lock (the daemon itself passes True: holding
    the lock, it knows every other daemon instance is gone). A row of the caller's own
    instance (``own``) is orphaned only when it is past its deadline plus grace and no
    thread of the caller serves it. ``only``: look at this run alone.
    """
    runs = [r for r in store.live_runs() if only is None or r.id == only]
    instances = store.instances(r.instance_id for r in runs if own is None or r.instance_id != own.instance)
    lapsed = store.nodes.lapsed(instances) if store.is_postgres() else None
    orphans = []
    for run in runs:
        if older_than and run.started_at and run.started_at > now - older_than:
            continue
        if own is not None and run.instance_id == own.instance:
            abandoned = run.deadline_at + own.grace < now and run.id not in own.serving
            reason = "past its deadline and no longer running" if abandoned else None
        else:
            reason = _death(instances.get(run.instance_id), now, host, daemon_lock_free, lapsed)
        if reason:
            orphans.append(Orphan(run.id, run.job, run.started_at, reason))
    return orphans


def cancel_orphan(
    run_id: int, now: float, host: str, *, daemon_lock_free: bool, own: Own | None = None
) -> bool:
    """Record a cancel of a run nothing runs any more; False when something still runs it."""
    orphan = next(
        iter(find_orphans(now, host, daemon_lock_free=daemon_lock_free, own=own, only=run_id)), None
    )
    if orphan is None:
        return False
    return store.finish_abandoned(run_id, CANCELLED, f"cancelled on request ({orphan.reason})", now)


def reap(orphans: list[Orphan], now: float, batch_size: int = 500) -> list[Orphan]:
    """Flip orphans to timeout by compare-and-set, one short transaction per batch."""
    reaped = []
    for i in range(0, len(orphans), batch_size):
        batch = orphans[i : i + batch_size]
        won = store.finish_abandoned_many([(o.id, o.reason) for o in batch], TIMEOUT, now)
        for orphan in batch:
            if orphan.id in won:
                reaped.append(orphan)
                log.warning(
                    "run %d (%s) %s -> timeout",
                    orphan.id,
                    orphan.job,
                    orphan.reason,
                    extra={"event": "reap", "job": orphan.job, "run_id": orphan.id, "status": TIMEOUT},
                )
            else:
                log.info("run %d (%s) ended before it could be reaped", orphan.id, orphan.job)
    return reaped
