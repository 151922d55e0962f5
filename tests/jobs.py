"""Run targets for the tests (imported by module path, as users' jobs are)."""

from __future__ import annotations

import os
import time


def steps(ctx):
    """Steps named by params["results"]: "ok", "warn" or "fail"."""
    for i, result in enumerate(ctx.params["results"]):
        with ctx.step(f"s{i}"):
            if result == "warn":
                ctx.warn("a finding")
            elif result == "fail":
                raise ValueError(f"step {i} failed")
    return {"steps": len(ctx.params["results"])}


def many_requests(ctx):
    """One step per slow request, for ever-ish: params url, count."""
    for i in range(ctx.params.get("count", 200)):
        with ctx.step(f"req-{i}"):
            ctx.http.get(ctx.params["url"]).raise_for_status()


def fetch(ctx):
    """One request, no steps; params url and optional headers."""
    resp = ctx.http.get(ctx.params["url"], headers=ctx.params.get("headers"))
    return {"status": resp.status_code, "bytes": len(resp.content)}


def sleep_uncooperatively(ctx):
    time.sleep(ctx.params.get("seconds", 600))


def busy_with_checkpoints(ctx):
    while True:
        time.sleep(0.01)
        ctx.checkpoint()


def raise_error(ctx):
    raise RuntimeError("secret is " + os.environ.get("TEST_SECRET", "none"))


def warn_only(ctx):
    ctx.warn("outside any step")


def swallow_everything(ctx):
    """A job that catches Exception around its requests: the abort still ends it."""
    while True:
        try:
            ctx.http.get(ctx.params["url"])
        except Exception:
            pass


def system_exit(ctx):
    raise SystemExit(3)


def context_fields(ctx):
    return {
        "run_id": ctx.run_id,
        "job": ctx.job,
        "scheduled_at": ctx.scheduled_at.isoformat(),
        "deadline": ctx.deadline.isoformat(),
        "remaining": ctx.remaining(),
    }
