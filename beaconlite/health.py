"""The health verdict and its metrics (SPEC section 6), read from the database alone."""

from __future__ import annotations

from beaconlite import store, timing
from beaconlite.durations import format_duration

DAY = 86400.0
METRICS = (
    "daemon_heartbeat_age_s",
    "live_runs",
    "long_running_runs",
    "leaked_threads",
    "overdue_jobs",
    "runs_24h",
    "failed_24h",
    "timeouts_24h",
    "orphans_reaped_24h",
)


def _overdue(jobs: list[tuple[str, str | None, bool, str]], since: float, now: float) -> list[str]:
    """Jobs with two of their slots passed since their last start (or since `since`)."""
    from beaconlite.cron import due_slots, parse_schedule, resolve_timezone

    late = []
    for name, schedule, enabled, zone in jobs:
        if not schedule or not enabled:
            continue
        last = store.last_start(name)
        tz = resolve_timezone(zone)
        slots, _ = due_slots(parse_schedule(schedule), tz, max(last or since, since), now, cap=2)
        if len(slots) >= 2:
            late.append(name)
    return late


def check(
    now: float, jobs: list[tuple[str, str | None, bool, str]], abort_grace: float, lock_free: bool
) -> tuple[list[str], dict]:
    """(problems, metrics); no problems means healthy."""
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
        "runs_24h": counts["runs"],
        "failed_24h": counts["error"],
        "timeouts_24h": counts["timeout"],
        "orphans_reaped_24h": counts["orphans"],
    }
    return problems, metrics


def prometheus(healthy: bool, metrics: dict) -> str:
    """The Prometheus text format, for node_exporter's textfile collector."""
    lines = [
        "# HELP beaconlite_healthy 1 when beaconlite health finds no problem.",
        "# TYPE beaconlite_healthy gauge",
        f"beaconlite_healthy {int(healthy)}",
    ]
    for key, value in metrics.items():
        name = "beaconlite_" + (key[:-2] + "_seconds" if key.endswith("_s") else key)
        if value is None:
            continue
        lines += [f"# TYPE {name} gauge", f"{name} {value}"]
    return "\n".join(lines)
