"""The status page and the run page: server-rendered HTML, every value escaped.

No script: forms POST the actions (the browser sends its HTTP Basic credentials with them),
a meta refresh keeps the page current while runs are live, and the stylesheet comes from
/static/ (the Content-Security-Policy allows nothing inline and nothing from elsewhere).
The markup hooks of SPEC section 12 are kept: ``data-job`` on each job, ``data-status`` on
each run of its strip, each a link to ``/runs/ID``.
"""

from __future__ import annotations

import json
from html import escape

from beaconlite.durations import format_duration
from beaconlite.render import local, with_offset

REFRESH = 5  # seconds, while runs are live


def _e(value) -> str:
    return escape("" if value is None else str(value), quote=True)


def _page(title: str, body: str, refresh: bool = False) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH}">' if refresh else ""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{_e(title)}</title>"
        '<link rel="stylesheet" href="/static/style.css"></head>\n'
        f"<body>{body}</body></html>\n"
    )


def _run_title(run: dict, tz) -> str:
    took = f" · {format_duration(run['duration_s'])}" if run.get("duration_s") is not None else ""
    when = local(run.get("started_at") or run.get("finished_at"), tz)
    return f"#{run['id']} {run['status']}{took} · {when}"


def status_page(state: dict, tz) -> str:
    """``state``: daemon, database, jobs (status rows), strips (job -> runs), live (runs),
    problems, zones (job -> tzinfo)."""
    daemon = state["daemon"]
    who = f" (pid {daemon.pid} on {daemon.host})" if daemon else ""
    parts = [
        "<header><h1>beaconlite</h1>",
        f'<p class="daemon">daemon: <span class="state-{_e(state["state"])}">{_e(state["state"])}</span>'
        f"{_e(who)} · database {_e(state['database'])}</p></header>",
    ]
    if state["problems"]:
        items = "".join(f"<li>{_e(p)}</li>" for p in state["problems"])
        parts.append(f'<section class="problems"><h2>Problems</h2><ul>{items}</ul></section>')
    if state.get("nodes"):
        rows = "".join(
            f'<tr data-node="{n["id"]}"><td>{n["id"]}{" (housekeeper)" if n["housekeeper"] else ""}</td>'
            f"<td>{_e(n['host'])}</td><td>{n['pid']}</td>"
            f'<td class="state-{_e(n["state"])}">{_e(n["state"])}</td>'
            f"<td>{_e(local(n['lease_until'], tz))}</td><td>{n['live_runs']}</td></tr>"
            for n in state["nodes"]
        )
        parts.append(
            '<section class="nodes"><h2>Nodes</h2><table><thead><tr><th>node</th><th>host</th><th>pid</th>'
            "<th>state</th><th>lease until</th><th>live</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></section>"
        )
    if state["live"]:
        rows = "".join(
            f'<tr><td><a href="/runs/{r.id}">#{r.id}</a></td><td>{_e(r.job)}</td>'
            f"<td>{_e(local(r.started_at, tz))}</td><td>{_e(local(r.deadline_at, tz))}</td>"
            f'<td><form method="post" action="/api/runs/{r.id}/cancel">'
            f'<button type="submit" class="cancel">Cancel</button></form></td></tr>'
            for r in state["live"]
        )
        parts.append(
            '<section class="live"><h2>Live runs</h2><table><thead><tr><th>run</th><th>job</th>'
            f"<th>started</th><th>deadline</th><th></th></tr></thead><tbody>{rows}</tbody></table></section>"
        )
    legend = "".join(
        f'<span class="key"><span class="run s-{status}"></span>{status}</span>'
        for status in ("success", "warning", "error", "timeout", "cancelled", "skipped", "running")
    )
    parts.append(f'<section class="jobs"><h2>Jobs</h2><p class="legend">{legend}</p>')
    for job in state["jobs"]:
        parts.append(_job(job, state["strips"].get(job["name"], []), state["zones"].get(job["name"]), tz))
    parts.append("</section>")
    return _page("beaconlite", "".join(parts), refresh=bool(state["live"]))


def _job(job: dict, strip: list[dict], zone, tz) -> str:
    flags = [f for f, on in (("paused", job["paused"]), ("disabled", not job["enabled"]),
                             ("live", job["live_runs"]), ("overdue", job.get("overdue"))) if on]  # fmt: skip
    badges = "".join(f'<span class="badge badge-{f}">{f}</span>' for f in flags)
    nxt = with_offset(job["next_run_at"], zone) if job["next_run_at"] and zone else "-"
    last = job["last_status"] or "-"
    runs = "".join(
        f'<a href="/runs/{r["id"]}" class="run s-{_e(r["status"])}" data-status="{_e(r["status"])}" '
        f'title="{_e(_run_title(r, tz))}"></a>'
        for r in reversed(strip)  # oldest left, newest right
    )
    name = _e(job["name"])
    return (
        f'<div class="job" data-job="{name}"><div class="head"><span class="name">{name}</span>{badges}'
        f'<form method="post" action="/api/jobs/{name}/trigger">'
        '<button type="submit">Run now</button></form></div>'
        f'<div class="meta">{_e(job["schedule"] or "manual")} · next {_e(nxt)} · last '
        f'<span class="s-text-{_e(last)}">{_e(last)}</span></div>'
        f'<div class="strip">{runs or "<span class=empty>no runs yet</span>"}</div></div>'
    )


def run_page(detail: dict, tz) -> str:
    """One run: its fields, steps, error, output tail and summary."""
    rid = detail["id"]
    rows = "".join(
        f"<tr><th>{label}</th><td>{_e(value)}</td></tr>"
        for label, value in (
            ("job", detail["job"]),
            ("status", detail["status"]),
            ("trigger", f"{detail['trigger']} (attempt {detail['attempt']})"),
            ("scheduled", detail["scheduled_at"]),
            ("started", detail["started_at"]),
            ("finished", detail["finished_at"]),
            ("duration", format_duration(detail["duration_s"]) if detail["duration_s"] is not None else "-"),
            ("error", detail["error"] or "-"),
        )
    )
    steps = "".join(
        f'<tr class="s-{_e(s["status"])}" data-status="{_e(s["status"])}"><td>{_e(s["name"])}</td>'
        f"<td>{_e(s['status'])}</td><td>{_e(s['duration_s'])}</td><td>{_e(s['error'] or '')}</td></tr>"
        for s in detail["steps"]
    )
    body = [
        '<header><p><a href="/">&larr; all jobs</a></p>',
        f'<h1 class="s-text-{_e(detail["status"])}">run #{rid}: {_e(detail["job"])} '
        f"{_e(detail['status'])}</h1></header>",
        f'<section><table class="fields">{rows}</table></section>',
    ]
    if steps:
        body.append(
            "<section><h2>Steps</h2><table><thead><tr><th>step</th><th>status</th><th>seconds</th>"
            f"<th>error</th></tr></thead><tbody>{steps}</tbody></table></section>"
        )
    if detail["output"]:
        body.append(f"<section><h2>Output</h2><pre>{_e(detail['output'])}</pre></section>")
    if detail["summary"] is not None:
        body.append(
            f"<section><h2>Summary</h2><pre>{_e(json.dumps(detail['summary'], indent=2))}</pre></section>"
        )
    return _page(f"run #{rid}", "".join(body), refresh=detail["status"] == "running")


STYLE = """
:root { --ok: #2e7d32; --warn: #f9a825; --bad: #c62828; --timeout: #6a1b9a; --off: #9e9e9e;
        --live: #1565c0; --fg: #1d1d1f; --muted: #666; --line: #e0e0e0; }
* { box-sizing: border-box; }
body { font: 15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
       margin: 0 auto; padding: 1rem; max-width: 72rem; }
h1 { font-size: 1.4rem; margin: 0 0 .2rem; } h2 { font-size: 1.1rem; margin: 1.2rem 0 .5rem; }
a { color: var(--live); }
.daemon, .meta, .empty { color: var(--muted); font-size: .9rem; }
.problems { border-left: 4px solid var(--bad); padding: .2rem .8rem; background: #fdecea; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: .3rem .5rem;
        border-bottom: 1px solid var(--line); vertical-align: top; }
.fields th { width: 8rem; color: var(--muted); font-weight: normal; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
.job { border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem; margin: .5rem 0; }
.head { display: flex; flex-wrap: wrap; align-items: center; gap: .4rem; }
.head form { margin-left: auto; }
.name { font-weight: 600; }
.badge { font-size: .75rem; padding: .05rem .4rem; border-radius: 3px; background: var(--off); color: #fff; }
.badge-live { background: var(--live); } .badge-overdue { background: var(--bad); }
.strip { display: flex; flex-wrap: wrap; gap: 2px; margin-top: .4rem; }
.run { display: inline-block; width: 14px; height: 22px; border-radius: 2px; background: var(--off); }
.s-success { background: var(--ok); } .s-warning { background: var(--warn); }
.s-error { background: var(--bad); } .s-timeout { background: var(--timeout); }
.s-running { background: var(--live); } .s-cancelled { background: var(--off); }
.s-skipped { background: #d4d4d4; }
tr.s-success, tr.s-warning, tr.s-error, tr.s-timeout, tr.s-running, tr.s-cancelled,
tr.s-skipped { background: none; }
.s-text-success { color: var(--ok); } .s-text-warning { color: #b07d00; } .s-text-error { color: var(--bad); }
.s-text-timeout { color: var(--timeout); }
button { font: inherit; padding: .2rem .7rem; border: 1px solid #bbb; border-radius: 4px;
         background: #fafafa; cursor: pointer; }
button.cancel { border-color: var(--bad); color: var(--bad); }
.daemon { overflow-wrap: anywhere; }
.legend { display: flex; flex-wrap: wrap; gap: .3rem .9rem; color: var(--muted); font-size: .8rem; }
.key { display: inline-flex; align-items: center; gap: .3rem; } .key .run { width: 10px; height: 12px; }
@media (max-width: 40rem) { body { padding: .5rem; } th, td { padding: .3rem .25rem; }
  .live th:nth-child(3), .live td:nth-child(3) { display: none; } }
"""
