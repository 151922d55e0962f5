"""The health verdict and its metrics (SPEC section 6), read from the database alone, and
the Prometheus text of both (``health --prometheus`` and ``GET /metrics``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from beaconlite import statuses, store, timing
from beaconlite.durations import format_duration

DAY = 86400.0
# name -> help, for the health gauges (SPEC section 6: seconds as _seconds)
METRICS = {
    "daemon_heartbeat_age_s": "Seconds since the daemon last wrote its heartbeat.",
    "live_runs": "Runs recorded as running.",
    "long_running_runs": "Live runs past their deadline.",
    "leaked_threads": "Run threads that did not end after their abort.",
    "overdue_jobs": "Jobs with two slots passed since their last start.",
    "runs_24h": "Runs started in the last 24 hours.",
    "failed_24h": "Runs that ended error in the last 24 hours.",
    "timeouts_24h": "Runs that ended timeout in the last 24 hours.",
    "orphans_reaped_24h": "Orphaned runs flipped to timeout in the last 24 hours.",
}


@dataclass
class Health:
    problems: list[str]
    metrics: dict
    overdue: list[str] = field(default_factory=list)
    runs_24h: dict[str, dict[str, int]] = field(default_factory=dict)  # job -> status -> runs

    @property
    def healthy(self) -> bool:
        return not self.problems


def _overdue(jobs: list[tuple[str, str | None, bool, str]], since: float, now: float) -> list[str]:
    """Jobs with two of their slots passed since their last start (or since `since`); a
    paused job is owed nothing, and one resumed is owed nothing from before."""
    from beaconlite.cron import due_slots, parse_schedule, resolve_timezone

    pauses = store.pauses()
    paused = {job for job, pause in pauses.items() if pause.resumed_at is None}
    scheduled = [job for job in jobs if job[1] and job[2] and job[0] not in paused]
    facts = store.job_facts([job[0] for job in scheduled])
    late = []
    for name, schedule, _, zone in scheduled:
        resumed = pauses[name].resumed_at if name in pauses else None
        start = max(facts[name].started_at or since, since, resumed or since)
        slots, _ = due_slots(parse_schedule(schedule), resolve_timezone(zone), start, now, cap=2)
        if len(slots) >= 2:
            late.append(name)
    return late


def check(
    now: float, jobs: list[tuple[str, str | None, bool, str]], abort_grace: float, lock_free: bool
) -> Health:
    """The verdict: no problems means healthy."""
    problems = []
    daemon, state = store.daemon_state(now, lock_free)
    age = now - daemon.heartbeat_at if daemon else None
    if state == "stopped":
        problems.append("the daemon is not running")
    elif state == "stale":
        problems.append(
            f"the daemon's heartbeat is {format_duration(age)} old "
            f"(orphan_after {format_duration(daemon.orphan_after)})"
        )
    live = store.live_runs()
    past = [r for r in live if r.deadline_at is not None and r.deadline_at < now]
    stuck = [r for r in past if r.deadline_at + abort_grace + timing.RECORDING_SLACK < now]
    if stuck:
        problems.append(
            f"{len(stuck)} live run(s) past their deadline: "
            + ", ".join(f"{r.id} ({r.job})" for r in stuck[:5])
        )
    leaked = daemon.leaked_threads if daemon and state == "running" else 0
    if leaked:
        problems.append(f"{leaked} run thread(s) leaked (did not end after their abort)")
    overdue = _overdue(jobs, daemon.started_at, now) if daemon and state == "running" else []
    if overdue:
        problems.append("overdue: " + ", ".join(overdue))
    counts = store.counts_since(now - DAY)
    metrics = {
        "daemon_heartbeat_age_s": round(age, 3) if age is not None else None,
        "live_runs": len(live),
        "long_running_runs": len(past),
        "leaked_threads": leaked,
        "overdue_jobs": len(overdue),
        "runs_24h": counts.started,
        "failed_24h": counts.finished(statuses.ERROR),
        "timeouts_24h": counts.finished(statuses.TIMEOUT),
        "orphans_reaped_24h": counts.orphans,
    }
    return Health(problems, metrics, overdue, counts.by_job)


def assess(config, now: float, lock_free: bool) -> Health:
    """The verdict for a config (or, with none, the jobs the daemon published)."""
    from beaconlite.config import DaemonSettings

    grace = (config.daemon if config is not None else DaemonSettings()).abort_grace
    return check(now, store.known_jobs(config), grace, lock_free)


def unreadable(error: Exception) -> Health:
    return Health([f"database unreadable: {error}"], dict.fromkeys(METRICS))


def prometheus_text(config, health: Health, now: float, readable: bool = True) -> str:
    """`health --prometheus` and `GET /metrics`: the gauges, and the per-job series."""
    if not readable:
        return prometheus(health, [])
    daemon, state = store.daemon_state(now)
    rows = store.job_overview(config, running=state == "running")
    return prometheus(health, rows)


# -- the Prometheus text ------------------------------------------------------------------

JOB_SERIES = {  # name -> (help, type)
    "job_last_success_timestamp_seconds": "When the job's last successful run finished (absent: never).",
    "job_last_finish_timestamp_seconds": "When the job's last run (not a skip) finished.",
    "job_last_duration_seconds": "How long the job's last finished run took.",
    "job_last_status": "1 for the status the job's last finished run ended in, 0 for the others.",
    "job_live_runs": "The job's runs recorded as running.",
    "job_overdue": "1 when two of the job's slots passed since its last start.",
    "job_paused": "1 while the job is paused.",
    "job_runs_24h": "The job's runs that finished in the last 24 hours, by status.",
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def prometheus(health: Health, jobs: list[dict]) -> str:
    """Every metric with HELP and TYPE (gauges: each says what is true now), per job by its
    `job` label. ``jobs``: the `status` rows."""
    out = [
        "# HELP beaconlite_healthy 1 when beaconlite health finds no problem.",
        "# TYPE beaconlite_healthy gauge",
        f"beaconlite_healthy {int(health.healthy)}",
    ]
    for key, text in METRICS.items():
        value = health.metrics.get(key)
        if value is None:
            continue
        name = "beaconlite_" + (key[:-2] + "_seconds" if key.endswith("_s") else key)
        out += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {_number(value)}"]
    samples: dict[str, list[str]] = {name: [] for name in JOB_SERIES}
    for job in jobs:
        name = _label(job["name"])
        if job.get("last_success_at") is not None:
            samples["job_last_success_timestamp_seconds"].append(
                f'{{job="{name}"}} {_number(job["last_success_at"])}'
            )
        if job["last_finished_at"] is not None:
            samples["job_last_finish_timestamp_seconds"].append(
                f'{{job="{name}"}} {_number(job["last_finished_at"])}'
            )
        if job.get("last_duration_s") is not None:
            samples["job_last_duration_seconds"].append(f'{{job="{name}"}} {_number(job["last_duration_s"])}')
        if job["last_status"] is not None:
            for status in statuses.FINISHED:
                samples["job_last_status"].append(
                    f'{{job="{name}",status="{status}"}} {int(status == job["last_status"])}'
                )
        samples["job_live_runs"].append(f'{{job="{name}"}} {job["live_runs"]}')
        samples["job_overdue"].append(f'{{job="{name}"}} {int(job["name"] in health.overdue)}')
        samples["job_paused"].append(f'{{job="{name}"}} {int(job["paused"])}')
        for status, n in sorted(health.runs_24h.get(job["name"], {}).items()):
            samples["job_runs_24h"].append(f'{{job="{name}",status="{_label(status)}"}} {n}')
    for series, text in JOB_SERIES.items():
        if samples[series]:
            name = f"beaconlite_{series}"
            out += [f"# HELP {name} {text}", f"# TYPE {name} gauge"] + [f"{name}{s}" for s in samples[series]]
    return "\n".join(out) + "\n"
