"""Run targets for the tests (imported by module path, as users' jobs are)."""

from __future__ import annotations

import json
import os
import time
from urllib.parse import quote


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


def requests_forever(ctx):
    """Requests in a loop with no step (nothing but the heartbeat can notice a foreign end)."""
    while True:
        ctx.http.get(ctx.params["url"])
        time.sleep(0.05)


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


# -- hostile job code: every one of these must still end its run ---------------------------


class Undescribable(Exception):
    def __str__(self):
        raise RuntimeError("no text for you")


class BlocksWhenDescribed(Exception):
    def __str__(self):
        time.sleep(3600)
        return "never"


class Fatal(BaseException):
    """Not an Exception: escapes every `except Exception`."""


class Unprintable:
    def __repr__(self):
        raise RuntimeError("no repr")

    __str__ = __repr__


class BlocksWhenPrinted:
    def __repr__(self):
        time.sleep(3600)
        return "never"


def raise_undescribable(ctx):
    raise Undescribable()


def raise_blocking_str(ctx):
    raise BlocksWhenDescribed()


def raise_surrogate(ctx):
    raise ValueError("bad byte \udcff here")


def raise_base_exception(ctx):
    raise Fatal("fatal")


def raise_run_cancelled(ctx):
    from beaconlite import RunCancelled

    raise RunCancelled("no abort is pending")


def summary_tuple_key(ctx):
    return {(1, 2): 1}


def summary_unprintable(ctx):
    return {"x": Unprintable()}


def summary_blocking(ctx):
    return [BlocksWhenPrinted()]


def summary_huge(ctx):
    return {"x": "y" * 100_000}


def undescribable_in_step(ctx):
    with ctx.step("hostile"):
        raise Undescribable()
    with ctx.step("after"):
        pass


def step_after_return(ctx):
    """Leaves a thread behind that calls ctx.step() once the run has returned."""
    import threading

    def later():
        time.sleep(ctx.params.get("delay", 0.3))
        try:
            with ctx.step("late"):
                pass
            outcome = "written"
        except BaseException as e:
            outcome = type(e).__name__
        with open(ctx.params["report"], "w") as f:
            f.write(outcome)

    threading.Thread(target=later, daemon=True).start()


def steps_forever(ctx):
    for i in range(100_000):
        with ctx.step(f"s{i}"):
            time.sleep(ctx.params.get("step", 0.1))


def fork_a_child(ctx):
    """A child that outlives its parent (a daemonizing helper, a careless fork)."""
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(ctx.params.get("seconds", 30))
        finally:
            os._exit(0)
    with open(ctx.params["pidfile"], "w") as f:
        f.write(str(pid))
    return {"child": pid}


def wait_for_file(ctx):
    """Sleeps (cooperatively) until params["path"] exists."""
    while not os.path.exists(ctx.params["path"]):
        time.sleep(0.02)
        ctx.checkpoint()


def leak_everywhere(ctx):
    """Puts params["secret"] everywhere a run writes: logs, step names, warnings, step errors
    (around the 500-character cut), a request's URL path, query and header, the summary, and
    (with params["fail"]) the run's own error and traceback."""
    secret, pad = ctx.params["secret"], ctx.params.get("pad", 0)
    ctx.log.info("log line %s and %s", secret, "more")
    ctx.log.warning("multi\nline " + secret)
    for part in secret.splitlines():  # a multi-line secret, a line at a time
        ctx.log.info("part %s", part)
    ctx.log.info("as JSON: %s", json.dumps({"secret": secret}))
    print(f"printed {secret}")
    with ctx.step(f"step {secret}"):
        ctx.warn(f"warned {secret}")
    with ctx.step("fails"):
        raise ValueError("e" * pad + secret + " tail")
    with ctx.step("request"):  # in the path, the query and a header, encoded as a URL needs
        url = f"{ctx.params['url']}/500/{quote(secret, safe='')}"
        ctx.http.get(
            url, params={"token": secret}, headers={"X-Token": ctx.params["header"]}
        ).raise_for_status()
    if ctx.params.get("fail"):
        raise RuntimeError(f"failed with {secret}\n" + "f" * pad + secret)
    return {"secret": secret, "nested": [secret, {"k": "x" * pad + secret}], f"key {secret}": 1}


def chatty(ctx):
    """print(), logging and ctx.log, params["lines"] more printed lines, then maybe a failure."""
    import logging

    tag = ctx.params["tag"]
    print(f"printed by {tag}")
    logging.getLogger("chatty").info("logged by %s", tag)
    logging.getLogger("chatty").debug("not kept: below INFO")
    ctx.log.info("ctx line by %s", tag)
    for i in range(ctx.params.get("lines", 0)):
        print(f"{tag} line {i}")
    time.sleep(ctx.params.get("sleep", 0))
    if ctx.params.get("fail"):
        raise RuntimeError(f"{tag} failed")


def effect(ctx):
    """A side effect that outlives any database: append "job slot pid run_id" to
    params["file"] (each execution one line, written with O_APPEND), then work params["work"]
    seconds in checkpointed steps of 50 ms."""
    line = f"{ctx.job} {ctx.scheduled_at.timestamp():.3f} {os.getpid()} {ctx.run_id}\n"
    fd = os.open(ctx.params["file"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    until = time.monotonic() + ctx.params.get("work", 0.0)
    while time.monotonic() < until:
        ctx.checkpoint()
        time.sleep(0.05)
