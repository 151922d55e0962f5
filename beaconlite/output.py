"""Rendering for the CLI: times, run and step JSON shapes (SPEC section 6), text tables."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from beaconlite.units import format_duration


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds: 2026-11-24T07:30:00.123Z."""
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def local(ts: float | None) -> str:
    """Local time for people."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


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
        "duration_s": duration,
        "error": step.error,
    }


def run_detail_json(run, steps: list) -> dict:
    ok = sum(1 for s in steps if s.status in ("success", "warning"))
    out = run_json(run, len(steps), ok)
    out["steps"] = [step_json(s) for s in steps]
    out["output"] = run.output
    out["summary"] = json.loads(run.summary) if run.summary else None
    return out


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


def one_line(text: str | None, width: int = 60) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
