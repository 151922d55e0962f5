"""Reading the ledger for people and monitors: history, one run, per-job overview, the
daemon's state, 24 h counts. Every query here stays flat as the history grows."""

from __future__ import annotations

from peewee import fn

from beaconlite.statuses import ERROR, FAILURES, FINISHED, OK, OUTCOMES, RUNNING, SKIPPED, SUCCESS, TIMEOUT
from beaconlite.store.schema import Instance, JobState, Pause, Run, Step


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
    daemon = latest_daemon()
    if daemon is None or daemon.stopped_at is not None or lock_free:
        return daemon, "stopped"
    if now - daemon.heartbeat_at > daemon.orphan_after:
        return daemon, "stale"
    return daemon, "running"


def last_start(job: str) -> float | None:
    """When the job last started a run (skipped rows have no start)."""
    row = (
        Run.select(Run.started_at)
        .where(Run.job == job, Run.started_at.is_null(False))
        .order_by(Run.id.desc())
        .first()
    )
    return row.started_at if row else None


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


def counts_since(since: float) -> dict[str, int]:
    """Runs started, and errors, timeouts and reaped orphans finished, since ``since``."""
    runs = Run.select().where(Run.started_at >= since).count()
    by_status = dict(
        Run.select(Run.status, fn.COUNT(Run.id))
        .where(Run.finished_at >= since, Run.status.in_(FAILURES))
        .group_by(Run.status)
        .tuples()
    )
    orphans = (
        Run.select()
        .where(Run.finished_at >= since, Run.status == TIMEOUT, Run.error.startswith("orphaned:"))
        .count()
    )
    return {
        "runs": runs,
        "error": by_status.get(ERROR, 0),
        "timeout": by_status.get(TIMEOUT, 0),
        "orphans": orphans,
    }


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
    if job:
        query = query.where(Run.job == job)
    if status:
        query = query.where(Run.status == status)
    if since is not None:
        query = query.where(
            (Run.started_at >= since) | (Run.started_at.is_null() & (Run.finished_at >= since))
        )
    runs = list(query.order_by(Run.id.desc()).limit(limit))
    counts = _step_counts([r.id for r in runs])
    return [(r, *counts.get(r.id, (0, 0))) for r in runs]


def recent_runs(job: str, limit: int) -> list[dict]:
    """A job's latest runs, newest first: what the status page's strip shows of each."""
    fields = (Run.id, Run.status, Run.duration_s, Run.started_at, Run.finished_at)
    return list(Run.select(*fields).where(Run.job == job).order_by(Run.id.desc()).limit(limit).dicts())


def get_run(run_id: int) -> tuple[Run, list[Step]] | None:
    run = Run.get_or_none(Run.id == run_id)
    if run is None:
        return None
    return run, list(Step.select().where(Step.run_id == run_id).order_by(Step.id))


def job_overview(config, running: bool) -> list[dict]:
    """Per job (the config's, or those the daemon published): schedule, zone, next fire
    (only while a daemon runs: otherwise nothing will fire), last status (skips ignored),
    when it finished, live runs, last skip reason, pause, and whether the running daemon
    has the job as the config says (``loaded``)."""
    published = {s.name: s for s in job_states()}
    paused = {p.job: p for p in Pause.select().where(Pause.resumed_at.is_null())}
    live = dict(Run.select(Run.job, fn.COUNT(Run.id)).where(Run.status == RUNNING).group_by(Run.job).tuples())
    rows = []
    for name, schedule, enabled, zone, digest in _jobs_with_digest(config, published):
        # One indexed MAX per status: (job, status, id) makes each a single seek, so this
        # stays flat however long a job's history is.
        last_ids = [
            Run.select(fn.MAX(Run.id)).where(Run.job == name, Run.status == s).scalar() for s in FINISHED
        ]
        last_id = max((i for i in last_ids if i), default=None)
        last = Run.get_by_id(last_id) if last_id else None
        success_id = last_ids[FINISHED.index(SUCCESS)]
        success = last if last and last.id == success_id else Run.get_or_none(Run.id == success_id)
        skip = (
            Run.select(Run.error)
            .where(Run.job == name, Run.status == SKIPPED)
            .order_by(Run.id.desc())
            .first()
        )
        pub, pause = published.get(name), paused.get(name)
        rows.append(
            {
                "name": name,
                "schedule": schedule,
                "enabled": enabled,
                "timezone": zone,
                "next_run_at": pub.next_run_at if running and pub and enabled else None,
                "last_status": last.status if last else None,
                "last_finished_at": last.finished_at if last else None,
                "last_duration_s": last.duration_s if last else None,
                "last_success_at": success.finished_at if success else None,
                "live_runs": live.get(name, 0),
                "last_skip_reason": skip.error if skip else None,
                "paused": pause is not None,
                "paused_at": pause.paused_at if pause else None,
                "paused_by": pause.paused_by if pause else None,
                "loaded": running and pub is not None and (digest is None or pub.spec in (None, digest)),
            }
        )
    return rows


def runs_by_job_since(since: float) -> dict[str, dict[str, int]]:
    """job -> status -> runs that finished since ``since`` (skips included)."""
    counts: dict[str, dict[str, int]] = {}
    rows = (
        Run.select(Run.job, Run.status, fn.COUNT(Run.id))
        .where(Run.finished_at >= since)
        .group_by(Run.job, Run.status)
        .tuples()
    )
    for job, status, n in rows:
        counts.setdefault(job, {})[status] = n
    return counts


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
