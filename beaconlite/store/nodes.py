"""The nodes of a cluster on one PostgreSQL (SPEC 11): leases by the database's clock, the
per-job decision lock, the housekeeping lease, and the conditions every write of a run
carries. PostgreSQL only: on SQLite the daemon lock says who is alive.

An instance is *alive* while its lease holds: ``lease_until`` (its last heartbeat plus its
``orphan_after``) is not past, by the database's clock. A database restart is nobody's death:
a lease counts as expired only once the server has also been up for ``orphan_after``.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

from peewee import SQL, Case, Tuple, fn

from beaconlite.errors import WriteFailed
from beaconlite.statuses import RUNNING
from beaconlite.store.database import DRIVER_ERRORS, db, in_this_batch, is_postgres, read_failed, write
from beaconlite.store.schema import Instance, Lease, Run

DB_NOW = SQL("CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)")
UP_SINCE = SQL("CAST(EXTRACT(EPOCH FROM pg_postmaster_start_time()) AS DOUBLE PRECISION)")
HOUSEKEEPING = "housekeeping"
COVER_LOOKBACK = 86400.0  # how far back a skipped row standing for many slots is looked for


class Fenced(WriteFailed):
    """This instance's lease is gone (it was frozen, or cut off): it may write nothing more
    for its runs, and must register again to go on."""


def alive(instance=Instance):
    """True (in SQL) while ``instance``'s lease holds."""
    return instance.stopped_at.is_null() & (
        (instance.lease_until >= DB_NOW) | ((UP_SINCE + instance.orphan_after) >= DB_NOW)
    )


def database_clock() -> float:
    """The database's time: what a node records and fires by."""
    try:
        return db.execute_sql(f"SELECT {DB_NOW.sql}").fetchone()[0]
    except DRIVER_ERRORS as e:
        raise read_failed(e) from None


def start_lease(instance_id: int) -> None:
    """A new instance's first lease (inside its registration's transaction)."""
    Instance.update(started_at=DB_NOW, heartbeat_at=DB_NOW, lease_until=DB_NOW + Instance.orphan_after).where(
        Instance.id == instance_id
    ).execute()


def renew_lease(instance_id: int) -> None:
    """Renew this instance's lease (inside the heartbeat's transaction); Fenced when it has
    expired: renewing it then would resurrect a node whose runs its peers may have rescued."""
    renewed = (
        Instance.update(heartbeat_at=DB_NOW, lease_until=DB_NOW + Instance.orphan_after)
        .where(Instance.id == instance_id, alive())
        .execute()
    )
    if renewed != 1:
        raise Fenced(f"instance {instance_id} lost its lease")


def require_lease(instance_id: int | None) -> None:
    """Fenced unless ``instance_id``'s lease holds (asked once per batch of writes)."""
    if instance_id is None or not is_postgres():
        return

    def look() -> bool:
        return Instance.select(Instance.id).where(Instance.id == instance_id, alive()).exists()

    if not in_this_batch(f"lease:{instance_id}", look):
        raise Fenced(f"instance {instance_id} lost its lease")


def run_owner_alive(run=Run):
    """True (in SQL) while the run's instance holds its lease (or it has none: a test's row)."""
    owners = Instance.select(Instance.id).where(Instance.id == run.instance_id, alive())
    return run.instance_id.is_null() | fn.EXISTS(owners)


def lapsed(instance_ids) -> set[int]:
    """Those of ``instance_ids`` whose lease has expired (or who stopped)."""
    ids = [i for i in set(instance_ids) if i is not None]
    if not ids:
        return set()
    return {i.id for i in Instance.select(Instance.id).where(Instance.id.in_(ids), ~alive())}


def living_daemons() -> list[Instance]:
    return list(Instance.select().where(Instance.kind == "daemon", alive()).order_by(Instance.id))


class Claim(NamedTuple):
    taken: bool  # the slot already has a row
    others: tuple[int, ...]  # the job's runs live on other living nodes, oldest first


def _lock_key(job: str) -> int:
    return zlib.crc32(f"beaconlite.job:{job}".encode())


class _Prepared(NamedTuple):
    jobs: frozenset[str]
    taken: frozenset[tuple[str, float, int]]  # (job, slot, attempt) that have a row
    others: dict[str, tuple[int, ...]]  # job -> its runs live on other living nodes


_PREPARED = "claims"  # the batch's memo of what prepare_claims read


def prepare_claims(fires: list[tuple[str, list[float]]], me: int | None) -> None:
    """Inside a batch of fires: take every job's decision lock at once (in one order, so two
    nodes never deadlock), then read what all their decisions need in one statement each:
    which of the slots have a row, and each job's runs live on other nodes. ``claim`` then
    answers from this, with no round trip of its own."""
    with write():  # opens the batch's transaction: the locks last until it ends
        in_this_batch(_PREPARED, lambda: _lock_and_read(fires, me))


def _lock_and_read(fires: list[tuple[str, list[float]]], me: int | None) -> _Prepared:
    jobs = sorted({job for job, _ in fires})
    keys = sorted({_lock_key(job) for job in jobs})
    db.execute_sql(
        "SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest(%s::bigint[]) AS k ORDER BY 1) AS ordered",
        (keys,),
    )
    slots = [(job, slot) for job, due in fires for slot in due]
    taken = Run.select(Run.job, Run.scheduled_at, Run.attempt).where(
        Tuple(Run.job, Run.scheduled_at).in_(slots)
    )
    others: dict[str, list[int]] = {}
    live = (
        Run.select(Run.id, Run.job)
        .where(Run.job.in_(jobs), Run.status == RUNNING, Run.instance_id != me, run_owner_alive())
        .order_by(Run.id)
    )
    for run_id, job in live.tuples():
        others.setdefault(job, []).append(run_id)
    return _Prepared(
        frozenset(jobs), frozenset(taken.tuples()), {job: tuple(ids) for job, ids in others.items()}
    )


def lock_job(job: str) -> None:
    """Take the job's decision lock until the end of the transaction (a pause waits for a
    decision under way)."""
    db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_lock_key(job),))


def claim(job: str, slot: float, attempt: int, me: int | None) -> Claim:
    """Inside the fire's transaction: take the job's decision lock (held to the commit, so a
    trigger on one node and a fire on another cannot both see room), then what the decision
    needs from the other nodes (from ``prepare_claims`` when the batch read it already)."""
    prepared = in_this_batch(_PREPARED, lambda: None)
    if prepared is None or job not in prepared.jobs:  # a trigger, or a fire no batch prepared
        with write():  # opens the transaction: the lock lasts until it ends
            prepared = _lock_and_read([(job, [slot])], me)
    return Claim((job, slot, attempt) in prepared.taken, prepared.others.get(job, ()))


def recorded_slots(job: str, first: float, last: float) -> list[tuple[float, float]]:
    """The (first, last) slots of the job's rows that cover any of [first, last] (a skipped
    row may stand for several slots: one that began up to a day earlier is seen)."""
    last_of_row = fn.COALESCE(Run.last_slot_at, Run.scheduled_at)
    return list(
        Run.select(Run.scheduled_at, last_of_row)
        .where(Run.job == job, Run.scheduled_at.between(first - COVER_LOOKBACK, last + 0.001))
        .where(last_of_row >= first - 0.001)
        .tuples()
    )


def owed_retries(since: float, statuses: tuple[str, ...]) -> list[Run]:
    """Runs a dead node recorded itself (ended with one of ``statuses`` since ``since``) whose
    next attempt has no row: retries that node held in memory and will never start."""
    following = Run.alias()
    next_attempt = following.select(following.id).where(
        following.job == Run.job,
        following.scheduled_at == Run.scheduled_at,
        following.attempt == Run.attempt + 1,
    )
    dead = Instance.select(Instance.id).where(~alive(), Instance.stopped_at.is_null())
    return list(
        Run.select(Run.id, Run.job, Run.status, Run.scheduled_at, Run.attempt, Run.instance_id).where(
            Run.finished_at >= since,
            Run.status.in_(statuses),
            Run.instance_id.in_(dead),
            Run.error.is_null() | ~Run.error.startswith("orphaned:"),  # flipped by a reaper: not its verdict
            ~fn.EXISTS(next_attempt),
        )
    )


def hold_lease(name: str, holder: int, seconds: float) -> bool:
    """Take or keep the lease ``name`` for ``seconds`` (by the database's clock); whether
    ``holder`` has it now."""
    with write():
        taken = (
            Lease.insert(name=name, holder=holder, until=DB_NOW + seconds)
            .on_conflict(
                conflict_target=[Lease.name],
                update={Lease.holder: holder, Lease.until: DB_NOW + seconds},
                where=(Lease.holder == holder) | (Lease.until < DB_NOW),
            )
            .execute()
        )
    return bool(taken)


def lease_holder(name: str) -> int | None:
    row = Lease.select(Lease.holder).where(Lease.name == name, Lease.until >= DB_NOW).first()
    return row.holder if row else None


def nodes(stale_after: float, recent: float = 86400.0) -> list[dict]:
    """The daemon nodes, living ones first, then those stopped or dead in the last ``recent``
    seconds: SPEC 11's node list (without live_runs, which the caller counts)."""
    state = Case(
        None,
        [
            (Instance.stopped_at.is_null(False), "stopped"),
            (~alive(), "dead"),
            (Instance.heartbeat_at < DB_NOW - stale_after, "stale"),
        ],
        "running",
    )
    rows = (
        Instance.select(Instance.id, Instance.host, Instance.pid, Instance.lease_until, state.alias("state"))
        .where(
            Instance.kind == "daemon",
            alive() | (fn.COALESCE(Instance.stopped_at, Instance.lease_until) >= DB_NOW - recent),
        )
        .order_by(Instance.id.desc())
        .limit(100)
        .dicts()
    )
    housekeeper = lease_holder(HOUSEKEEPING)
    live = dict(
        Run.select(Run.instance_id, fn.COUNT(Run.id))
        .where(Run.status == RUNNING)
        .group_by(Run.instance_id)
        .tuples()
    )
    order = {"running": 0, "stale": 1, "dead": 2, "stopped": 3}
    found = [
        {
            "id": r["id"],
            "host": r["host"],
            "pid": r["pid"],
            "state": r["state"],
            "lease_until": r["lease_until"],
            "live_runs": live.get(r["id"], 0),
            "housekeeper": r["id"] == housekeeper and r["state"] in ("running", "stale"),
        }
        for r in rows
    ]
    return sorted(found, key=lambda n: (order[n["state"]], n["id"]))
