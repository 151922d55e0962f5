"""The three job kinds: a Python integrity run, a command, declarative HTTP checks.

Each takes the run (a ``RunControl``: its deadline, abort and output) and its ``RunContext``
and returns the run's summary; what it found goes into the findings (steps, warnings) for
the runner's verdict. Aborts surface as RunAborted. Calls go one way: the runner calls a
kind, a kind calls the context and the run's narrow control, never the runner itself.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from beaconlite import process
from beaconlite.config import Check, JobSpec
from beaconlite.errors import StepFailed
from beaconlite.statuses import SKIPPED
from beaconlite.verdict import StepRecord

if TYPE_CHECKING:
    from beaconlite.context import RunContext, RunControl


# -- Python integrity runs ------------------------------------------------------------------


def run_python(run: RunControl, ctx: RunContext) -> Any:
    return run.target(ctx)


# -- commands -----------------------------------------------------------------------------


def run_command(run: RunControl, ctx: RunContext) -> dict:
    job = run.job
    name = "sh -c" if job.shell else os.path.basename(job.command[0])
    code = None
    with ctx.step(name):
        try:
            proc = process.spawn(job.command, job.shell, job.cwd, job.env)
        except OSError as e:
            raise StepFailed(f"cannot start {name}: {e.strerror or e}") from None
        run.attach_process(proc)
        tail = process.Tail()
        try:
            # The deadline alarm does not count time asleep; the run's elapsed-time check does.
            code = process.pump(proc, tail, run.enforce_deadline)
        finally:
            run.keep_output(*tail.text())
            # Whatever the command left behind in its group goes with it.
            process.kill_group(proc.pid, signal.SIGKILL)
            proc.stdout.close()
        ctx.checkpoint()  # killed by the abort: the abort decides the status
        if code in job.ok_exit_codes:
            pass
        elif code in job.warning_exit_codes:
            ctx.warn(f"exit code {code}")
        else:
            raise StepFailed(f"exit code {code}" if code >= 0 else f"killed by signal {-code}")
    return {"exit_code": code}


# -- declarative HTTP checks --------------------------------------------------------------


def run_checks(run: RunControl, ctx: RunContext) -> dict:
    job = run.job
    run.redactor.add(v for c in job.checks for v in c.headers.values())
    try:
        for check in job.checks:
            with ctx.step(check.name):
                _check(check, job, ctx)
    finally:
        # Checks the run ended before: "skipped" steps (written with the run's end), so
        # the record shows every check.
        for check in job.checks[len(ctx.findings.steps) :]:
            ctx.findings.steps.append(StepRecord(run.redactor.line(check.name, 200), status=SKIPPED))
    return {"checks": len(job.checks)}


def _check(check: Check, job: JobSpec, ctx: RunContext) -> None:
    kwargs: dict[str, Any] = {"headers": dict(check.headers) or None, "stream": True, "allow_redirects": True}
    if check.body is not None:
        kwargs["data"] = check.body.encode()
    if check.json is not None:
        kwargs["json"] = check.json
    started = time.monotonic()
    with ctx.http.request(check.method, check.url, **kwargs) as resp:
        body = _read_capped(resp, job.http.max_body, ctx.checkpoint)
    latency = time.monotonic() - started
    expected = check.expect_status
    if (resp.status_code not in expected) if expected else not 200 <= resp.status_code < 300:
        want = " or ".join(map(str, expected)) if expected else "2xx"
        raise StepFailed(f"status {resp.status_code}, expected {want}")
    if check.contains is not None and check.contains not in body.decode("utf-8", "replace"):
        raise StepFailed(f"body does not contain {check.contains!r}")
    if check.expect_json:
        try:
            document = json.loads(body)
        except ValueError:
            raise StepFailed("body is not JSON") from None
        for path, want in check.expect_json.items():
            got = _dig(document, path)
            if got != want:
                raise StepFailed(f"{path} = {json.dumps(got)}, expected {json.dumps(want)}")
    if check.max_latency is not None and latency > check.max_latency:
        ctx.warn(f"latency {latency:.2f}s > max_latency {check.max_latency:g}s")


_MISSING = "<missing>"


def _dig(document, path: str):
    node = document
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _read_capped(resp, max_body: int, checkpoint: Callable[[], None]) -> bytes:
    """The body, refusing more than max_body bytes (a 10 GB Content-Length is no threat)."""
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_body:
        raise StepFailed(f"body of {int(declared)} bytes is larger than max_body ({max_body})")
    data = bytearray()
    for chunk in resp.iter_content(65536):
        data += chunk
        if len(data) > max_body:
            raise StepFailed(f"body is larger than max_body ({max_body} bytes)")
        checkpoint()
    return bytes(data)


KINDS = {"python": run_python, "command": run_command, "checks": run_checks}


def execute(run: RunControl, ctx: RunContext) -> Any:
    """Do the run's work; its summary (or None)."""
    return KINDS[run.job.kind](run, ctx)
