"""Reading the ledger for people and monitors: history, one run, per-job overview, the
daemon's state, 24 h counts. Every query here stays flat as the history grows."""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from typing import NamedTuple

from peewee import Select, fn

from beaconlite.statuses import ALL, FINISHED, OK, OUTCOMES, RUNNING, SKIPPED, SUCCESS, TIMEOUT
from beaconlite.store import nodes
from beaconlite.store.database import db, is_postgres
from beaconlite.store.runs import job_name_tables, paused_jobs
from beaconlite.store.schema import Instance, JobState, Run, Step


def instances(ids) -> dict[int, Instance]:
    ids = {i for i in ids if i is not None}
    return {i.id: i for i in Instance.select().where(Instance.id.in_(ids))} if ids else {}


def latest_daemon() -> Instance | None:
    return Instance.select().where(Instance.kind == "daemon").order_by(Instance.id.desc()).first()


def daemon_state(now: float, lock_free: bool = False) -> tuple[Instance | None, str]:
    """The latest daemon instance and its state: running, stopped or stale.

    Stopped: a clean stop, or nobody holds the daemon lock (it died). Stale: a heartbeat
    older than the orphan_after it recorded (frozen, or asleep).
    """
    if is_postgres():  # a cluster: running while any node holds its lease
        living = nodes.living_daemons()
        if living:
            return living[-1], "running"
    daemon = latest_daemon()
    if daemon is None or daemon.stopped_at is not None or lock_free:
        return daemon, "stopped"
    if now - daemon.heartbeat_at > daemon.orphan_after:
        return daemon, "stale"
    return daemon, "running"


def cluster_nodes(heartbeat_interval: float) -> list[dict] | None:
    """A cluster's nodes (SPEC 11), or None on SQLite (one daemon, no node list)."""
    return nodes.nodes(stale_after=2 * heartbeat_interval + 1.0) if is_postgres() else None


def previous_outcome(job: str, before_id: int) -> str | None:
    """The status of the job's last success, warning, error or timeout before this run."""
    latest = None
    for status in OUTCOMES:
        found = (
            Run.select(fn.MAX(Run.id))
            .where(Run.job == job, Run.status == status, Run.id < before_id)
            .scalar()
        )
        if found and (latest is None or found > latest[0]):
            latest = (found, status)
    return latest[1] if latest else None


@dataclass
class DayCounts:
    """Runs of the last day: started, and finished by job and status."""

    started: int
    by_job: dict[str, dict[str, int]]  # job -> status -> runs finished (skips included)
    orphans: int  # runs the reaper flipped to timeout

    def finished(self, status: str) -> int:
        return sum(per_job.get(status, 0) for per_job in self.by_job.values())


def counts_since(since: float) -> DayCounts:
    """One walk of the time index over the rows finished since ``since``, counted here: a
    GROUP BY or a status filter would let the planner walk a (job, status) index through
    the whole history instead. A run started since has finished since, or is live."""
    by_job: dict[str, dict[str, int]] = {}
    started = orphans = 0
    orphaned = (Run.status == TIMEOUT) & Run.error.startswith("orphaned:")
    rows = Run.select(Run.job, Run.status, Run.started_at >= since, orphaned).where(Run.finished_at >= since)
    for job, status, started_since, reaped in db.execute(rows):  # the cursor's tuples: a day is many rows
        per_job = by_job.setdefault(job, {})
        per_job[status] = per_job.get(status, 0) + 1
        started += bool(started_since)
        orphans += bool(reaped)
    started += Run.select().where(Run.status == RUNNING, Run.started_at >= since).count()
    return DayCounts(started, by_job, orphans)


def _step_counts(run_ids: list[int]) -> dict[int, tuple[int, int]]:
    if not run_ids:
        return {}
    ok = fn.SUM(Step.status.in_(OK).cast("INTEGER"))
    rows = (
        Step.select(Step.run_id, fn.COUNT(Step.id), ok)
        .where(Step.run_id.in_(run_ids))
        .group_by(Step.run_id)
        .tuples()
    )
    return {run_id: (total, int(good or 0)) for run_id, total, good in rows}


def list_runs(
    job: str | None = None, status: str | None = None, since: float | None = None, limit: int = 20
) -> list[tuple[Run, int, int]]:
    """History newest first, each with (steps_total, steps_ok)."""
    query = Run.select()
    if since is not None:
        bound = _first_id_since(since)
        if bound is None:
            return []
        query = query.where(
            Run.id >= bound,
            (Run.started_at >= since) | (Run.started_at.is_null() & (Run.finished_at >= since)),
        )
    runs = _newest(query, job, status, limit)
    counts = _step_counts([r.id for r in runs])
    return [(r, *counts.get(r.id, (0, 0))) for r in runs]


def recent_runs(job: str, limit: int) -> list[dict]:
    """A job's latest runs, newest first: what the status page's strip shows of each."""
    fields = (Run.id, Run.status, Run.duration_s, Run.started_at, Run.finished_at)
    return [
        {f.name: getattr(r, f.name) for f in fields} for r in _newest(Run.select(*fields), job, None, limit)
    ]


def _newest(query, job: str | None, status: str | None, limit: int) -> list[Run]:
    """The newest (highest id) rows of ``query``, through an index however long the history:
    a job's are merged from one backwards walk of (job, status) per status; a status other
    than success walks the partial index of the runs that did not succeed (success, most
    rows, is found at once walking back from the newest)."""
    if job is None:
        if status is not None:
            query = query.where(Run.status == status)
            if status != SUCCESS:
                query = query.where(Run.status != SUCCESS)  # names run_unsuccessful's condition
        return list(query.order_by(Run.id.desc()).limit(limit))
    rows = []
    for each in (status,) if status else ALL:
        rows.extend(query.where(Run.job == job, Run.status == each).order_by(Run.id.desc()).limit(limit))
    return sorted(rows, key=lambda r: r.id, reverse=True)[:limit]


def _first_id_since(since: float) -> int | None:
    """A lower bound for the ids of the rows that started (or were recorded skipped) since
    ``since``: each has finished since, or is live. None: there is no such row. It lets an
    index walk stop where the window begins instead of at the start of the history."""
    bounds = [
        Run.select(fn.MIN(Run.id)).where(Run.finished_at >= since).scalar(),
        Run.select(fn.MIN(Run.id)).where(Run.status == RUNNING, Run.started_at >= since).scalar(),
    ]
    found = [b for b in bounds if b is not None]
    return min(found) if found else None


def get_run(run_id: int) -> tuple[Run, list[Step]] | None:
    run = Run.get_or_none(Run.id == run_id)
    if run is None:
        return None
    return run, list(Step.select().where(Step.run_id == run_id).order_by(Step.id))


class LatestRun(NamedTuple):
    """The fields of a job's latest run that `status`, `health` and the metrics show."""

    id: int
    status: str
    started_at: float | None
    finished_at: float | None
    duration_s: float | None
    error: str | None


@dataclass
class JobFacts:
    """What the ledger says of one job, for `status`, `health` and the web endpoint."""

    last: LatestRun | None = None  # the latest run that started and finished
    success: LatestRun | None = None  # the latest success
    skip: LatestRun | None = None  # the latest skipped row
    started_at: float | None = None  # when the latest run started
    live: int = 0  # runs recorded as running


_LATEST_OF = (*FINISHED, SKIPPED, RUNNING)
_LATEST_FIELDS = (Run.id, Run.status, Run.started_at, Run.finished_at, Run.duration_s, Run.error)  # LatestRun


def job_facts(names: list[str]) -> dict[str, JobFacts]:
    """Per job: its latest run of each status, one statement per few hundred jobs (a
    correlated MAX per status is one seek in (job, status); the rows are then found by id
    in the same statement). Flat however long the history is, and no query per job."""
    latest: dict[str, dict[str, LatestRun]] = {}
    for jobs in job_name_tables(names):
        ids = Select(
            from_list=[jobs],
            columns=[
                Run.select(fn.MAX(Run.id)).where((Run.job == jobs.c.name) & (Run.status == s)).alias(s)
                for s in _LATEST_OF
            ],
        ).cte("latest")
        every_id = reduce(
            lambda a, b: a.union_all(b), [Select(from_list=[ids], columns=[ids.c[s]]) for s in _LATEST_OF]
        )
        query = Run.select(Run.job, *_LATEST_FIELDS).where(Run.id.in_(every_id)).with_cte(jobs, ids)
        for job, *fields in db.execute(query):  # the cursor's tuples: thousands of rows
            run = LatestRun(*fields)
            latest.setdefault(job, {})[run.status] = run
    facts = {}
    for name in names:
        runs = latest.get(name, {})
        last = max((runs[s] for s in FINISHED if s in runs), key=lambda r: r.id, default=None)
        started = max((runs[s] for s in (*FINISHED, RUNNING) if s in runs), key=lambda r: r.id, default=None)
        facts[name] = JobFacts(
            last=last,
            success=runs.get(SUCCESS),
            skip=runs.get(SKIPPED),
            started_at=started.started_at if started else None,
        )
    for (name,) in Run.select(Run.job).where(Run.status == RUNNING).tuples():  # run_live, not a GROUP BY
        if name in facts:
            facts[name].live += 1
    return facts


def job_overview(config, running: bool) -> list[dict]:
    """Per job (the config's, or those the daemon published): schedule, zone, next fire
    (only while a daemon runs and the job is neither disabled nor paused: otherwise nothing
    will fire), last status (skips ignored),
    when it finished, live runs, last skip reason, pause, and whether the running daemon
    has the job as the config says (``loaded``)."""
    published = {s.name: s for s in job_states()}
    paused = paused_jobs()
    jobs = _jobs_with_digest(config, published)
    facts = job_facts([job[0] for job in jobs])
    rows = []
    for name, schedule, enabled, zone, digest in jobs:
        fact, pub, pause = facts[name], published.get(name), paused.get(name)
        last = fact.last
        rows.append(
            {
                "name": name,
                "schedule": schedule,
                "enabled": enabled,
                "timezone": zone,
                "next_run_at": pub.next_run_at if running and pub and enabled and not pause else None,
                "last_status": last.status if last else None,
                "last_finished_at": last.finished_at if last else None,
                "last_duration_s": last.duration_s if last else None,
                "last_success_at": fact.success.finished_at if fact.success else None,
                "live_runs": fact.live,
                "last_skip_reason": fact.skip.error if fact.skip else None,
                "paused": pause is not None,
                "paused_at": pause.paused_at if pause else None,
                "paused_by": pause.paused_by if pause else None,
                "loaded": running and pub is not None and (digest is None or pub.spec in (None, digest)),
            }
        )
    return rows


def _jobs_with_digest(config, published: dict) -> list[tuple]:
    if config is not None:
        return [(j.name, j.schedule, j.enabled, j.timezone, j.digest) for j in config.jobs]
    return [(s.name, s.schedule, bool(s.enabled), s.timezone or "local", None) for s in published.values()]


def known_jobs(config) -> list[tuple[str, str | None, bool, str]]:
    """(name, schedule, enabled, timezone) of every job: the config's, or with no config
    the ones the daemon last published."""
    if config is not None:
        return [(j.name, j.schedule, j.enabled, j.timezone) for j in config.jobs]
    return [(s.name, s.schedule, bool(s.enabled), s.timezone or "local") for s in job_states()]


def job_states() -> list[JobState]:
    return list(JobState.select().order_by(JobState.name))
