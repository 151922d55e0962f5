"""Rendering for the CLI: times, run and step JSON shapes (SPEC section 6), text tables."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from beaconlite import statuses
from beaconlite.durations import format_duration
from beaconlite.redaction import one_line


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds: 2026-11-24T07:30:00.123Z."""
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def local(ts: float | None, tz=None) -> str:
    """A time for people, in ``tz`` (default: the host's zone), with the zone's abbreviation."""
    if ts is None:
        return "-"
    moment = datetime.fromtimestamp(ts, timezone.utc)
    return (moment.astimezone(tz) if tz else moment.astimezone()).strftime("%Y-%m-%d %H:%M:%S %Z")


def with_offset(ts: float, tz) -> str:
    """A fire time in its job's zone with the UTC offset: 2026-03-08 03:00:00 EDT (-04:00)."""
    moment = datetime.fromtimestamp(ts, timezone.utc).astimezone(tz)
    offset = moment.strftime("%z")
    return f"{moment.strftime('%Y-%m-%d %H:%M:%S %Z')} ({offset[:3]}:{offset[3:]})"


def ago(seconds: float) -> str:
    return f"{format_duration(max(0.0, seconds))} ago"


def run_json(run, steps_total: int, steps_ok: int) -> dict:
    return {
        "id": run.id,
        "job": run.job,
        "status": run.status,
        "trigger": run.trigger,
        "attempt": run.attempt,
        "scheduled_at": iso(run.scheduled_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "deadline_at": iso(run.deadline_at),
        "duration_s": run.duration_s,
        "error": run.error,
        "steps_total": steps_total,
        "steps_ok": steps_ok,
        "slots": run.slots,
        "last_slot_at": iso(run.last_slot_at if run.last_slot_at is not None else run.scheduled_at),
    }


def step_json(step) -> dict:
    duration = (
        step.finished_at - step.started_at
        if step.finished_at is not None and step.started_at is not None
        else None
    )
    return {
        "name": step.name,
        "status": step.status,
        "started_at": iso(step.started_at),
        "finished_at": iso(step.finished_at),
        "duration_s": round(duration, 3) if duration is not None else None,
        "error": step.error,
    }


def run_detail_json(run, steps: list) -> dict:
    ok = sum(1 for s in steps if s.status in statuses.OK)
    out = run_json(run, len(steps), ok)
    out["steps"] = [step_json(s) for s in steps]
    out["output"] = run.output
    out["summary"] = json.loads(run.summary) if run.summary else None
    return out


STATUS_JOB_KEYS = ("name", "schedule", "enabled", "timezone", "next_run_at", "last_status",
                   "last_finished_at", "live_runs", "last_skip_reason", "paused", "paused_at",
                   "paused_by", "loaded")  # fmt: skip


def status_json(daemon, state: str, rows: list[dict], database, nodes: list[dict] | None = None) -> dict:
    value = {
        "daemon": {
            "state": state,
            "pid": daemon.pid if daemon else None,
            "host": daemon.host if daemon else None,
            "version": daemon.version if daemon else None,
            "started_at": iso(daemon.started_at) if daemon else None,
            "heartbeat_at": iso(daemon.heartbeat_at) if daemon else None,
            "database": str(database),
        },
        "jobs": [
            {
                **{key: j[key] for key in STATUS_JOB_KEYS},
                "next_run_at": iso(j["next_run_at"]),
                "last_finished_at": iso(j["last_finished_at"]),
                "paused_at": iso(j["paused_at"]),
            }
            for j in rows
        ],
    }
    if nodes is not None:  # a cluster (SPEC 11)
        value["nodes"] = [{**n, "lease_until": iso(n["lease_until"])} for n in nodes]
    return value


def nodes_text(nodes: list[dict], tz=None) -> str:
    rows = [
        [
            str(n["id"]) + (" (housekeeper)" if n["housekeeper"] else ""),
            n["host"],
            str(n["pid"]),
            n["state"],
            local(n["lease_until"], tz),
            str(n["live_runs"]),
        ]
        for n in nodes
    ]
    return table(["NODE", "HOST", "PID", "STATE", "LEASE UNTIL", "LIVE"], rows) if rows else "nodes: none"


def reap_json(dry_run: bool, orphans: list) -> dict:
    return {
        "dry_run": dry_run,
        "reaped": [
            {"id": o.id, "job": o.job, "started_at": iso(o.started_at), "reason": o.reason} for o in orphans
        ],
    }


def dumps(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; the last column is left ragged."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths)] + [row[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def cell(text: str | None, width: int = 60) -> str:
    """A table cell: one bounded line, or "-"."""
    return one_line(text, width) if text else "-"


# -- text for people ----------------------------------------------------------------------


def status_text(daemon, state: str, jobs: list[dict], now: float, database, exists: bool, tz=None) -> str:
    lines = [f"database: {database}" if exists else f"no database yet at {database}"]
    if daemon is None:
        lines.append("daemon: stopped (never started on this database)")
    else:
        lines.append(
            f"daemon: {state} (pid {daemon.pid} on {daemon.host}, v{daemon.version}, "
            f"since {local(daemon.started_at, tz)}, heartbeat {ago(now - daemon.heartbeat_at)})"
        )
    rows = []
    for j in jobs:
        notes = [n for n, on in (("disabled", not j["enabled"]), ("paused", j["paused"])) if on]
        if state == "running" and not j["loaded"]:
            notes.append("not loaded by the daemon")
        rows.append(
            [
                j["name"] + (f" ({', '.join(notes)})" if notes else ""),
                j["schedule"] or "manual",
                local(j["next_run_at"], tz),
                j["last_status"] or "-",
                str(j["live_runs"]),
                cell(j["last_skip_reason"], 50),
            ]
        )
    paused = [
        f"{j['name']} paused since {local(j['paused_at'], tz)} by {j['paused_by']}"
        for j in jobs
        if j["paused"]
    ]
    if rows:
        lines.append(table(["JOB", "SCHEDULE", "NEXT RUN", "LAST", "LIVE", "LAST SKIP"], rows))
    return "\n".join(lines + paused)


def reap_text(dry_run: bool, orphans: list, tz=None) -> str:
    lines = [f"{'would flip' if dry_run else 'flipped'} {len(orphans)} orphaned run(s) to timeout"]
    lines += [f"  {o.id} {o.job} (started {local(o.started_at, tz)}): {o.reason}" for o in orphans]
    return "\n".join(lines)


def health_json(health) -> dict:
    return {"healthy": health.healthy, "problems": health.problems, "metrics": health.metrics}


def health_text(health) -> str:
    lines = ["healthy" if health.healthy else "unhealthy"] + [f"  problem: {p}" for p in health.problems]
    return "\n".join(lines + [f"  {k}: {'-' if v is None else v}" for k, v in health.metrics.items()])


def check_config_json(config, fires: dict[str, list | None]) -> dict:
    return {
        "ok": True,
        "database": str(config.daemon.database),
        "jobs": [
            {
                "name": job.name,
                "kind": job.kind,
                "schedule": job.schedule,
                "timezone": job.timezone,
                "next": [iso(t.timestamp()) for t in fires[job.name] or []],
            }
            for job in config.jobs
        ],
    }


def check_config_text(config, fires: dict[str, list | None]) -> str:
    """`check-config`: the verdict, then each job with its next fire times in its own zone."""
    head = f"{config.path}: ok, {len(config.jobs)} job(s), database {config.daemon.database}"
    rows = []
    for job in config.jobs:
        times = fires[job.name]
        label = job.name + ("" if job.enabled else " (disabled)")
        whens = ["manual only"] if times is None else [with_offset(t.timestamp(), job.zone()) for t in times]
        rows.append([label, job.kind, job.schedule or "-", job.timezone, *whens[:1]])
        rows += [["", "", "", "", when] for when in whens[1:]]
    return head + ("\n" + table(["JOB", "KIND", "SCHEDULE", "TIMEZONE", "NEXT FIRES"], rows) if rows else "")


def runs_text(found: list, tz=None) -> str:
    rows = [
        [
            str(r.id),
            r.job,
            r.status,
            r.trigger,
            local(r.started_at or r.finished_at, tz),
            format_duration(r.duration_s) if r.duration_s is not None else "-",
            f"{ok}/{total}" if total else "-",
            cell(r.error),
        ]
        for r, total, ok in found
    ]
    if not rows:
        return "no runs"
    return table(["ID", "JOB", "STATUS", "TRIGGER", "STARTED", "DURATION", "STEPS", "ERROR"], rows)


def show_text(run, detail: dict, tz=None) -> str:
    lines = [f"run {run.id}: {run.job} {run.status} ({run.trigger}, attempt {run.attempt})"]
    for label in ("scheduled", "started", "finished", "deadline"):
        lines.append(f"  {label + ':':11}{local(getattr(run, label + '_at'), tz)}")
    if run.duration_s is not None:
        lines.append(f"  {'duration:':11}{format_duration(run.duration_s)}")
    if run.error:
        lines.append(f"  {'error:':11}{run.error}")
    if detail["steps"]:
        lines.append(f"  steps ({detail['steps_ok']}/{detail['steps_total']} ok):")
        for s in detail["steps"]:
            took = f" {s['duration_s']:.3f}s" if s["duration_s"] is not None else ""
            err = f" - {cell(s['error'], 80)}" if s["error"] else ""
            lines.append(f"    {s['status']:9} {s['name']}{took}{err}")
    if detail["summary"] is not None:
        lines.append(f"  summary:   {cell(dumps(detail['summary']), 200)}")
    if run.output:
        shown = run.output.rstrip("\n").splitlines()[-40:]
        lines.append("  output (tail):" if len(shown) < len(run.output.splitlines()) else "  output:")
        lines += ["    " + line for line in shown]
    return "\n".join(lines)
