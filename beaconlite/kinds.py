"""The three job kinds: a Python integrity run, a command, declarative HTTP checks.

Each takes (job, ctx, live) and returns the run's summary; what it found goes into ctx's
findings (steps, warnings) for the runner's verdict. Aborts surface as RunAborted.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from beaconlite import timing
from beaconlite.config import Check, JobSpec, resolve_target
from beaconlite.errors import StepFailed
from beaconlite.statuses import SKIPPED
from beaconlite.verdict import StepRecord

if TYPE_CHECKING:
    from beaconlite.context import RunContext
    from beaconlite.runner import LiveRun

OUTPUT_TAIL = 64 * 1024


def run_python(job: JobSpec, ctx: RunContext, live: LiveRun) -> Any:
    target = resolve_target(job.run, live.import_paths)
    return target(ctx)


# -- commands -----------------------------------------------------------------------------


class Tail:
    """The last OUTPUT_TAIL bytes of a stream, in bounded memory."""

    def __init__(self, limit: int = OUTPUT_TAIL):
        self.limit = limit
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * self.limit:
            del self.data[: len(self.data) - self.limit]

    def text(self) -> str:
        return bytes(self.data[-self.limit :]).decode("utf-8", "replace")


def kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_command(job: JobSpec, ctx: RunContext, live: LiveRun) -> dict:
    name = "sh -c" if job.shell else os.path.basename(job.command[0])
    code = None
    with ctx.step(name):
        env = {**os.environ, **job.env}
        try:
            proc = subprocess.Popen(
                job.command,
                shell=job.shell,
                cwd=job.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: one killpg reaches them all
            )
        except OSError as e:
            raise StepFailed(f"cannot start {name}: {e.strerror or e}") from None
        live.attach_process(proc)
        tail = Tail()
        try:
            code = _pump(proc, tail, live)
        finally:
            live.output = tail.text()
            # Whatever the command left behind in its group goes with it.
            kill_group(proc.pid, signal.SIGKILL)
            proc.stdout.close()
        live.checkpoint()  # killed by the abort: the abort decides the status
        if code in job.ok_exit_codes:
            pass
        elif code in job.warning_exit_codes:
            ctx.warn(f"exit code {code}")
        else:
            raise StepFailed(f"exit code {code}" if code >= 0 else f"killed by signal {-code}")
    return {"exit_code": code}


def _pump(proc: subprocess.Popen, tail: Tail, live: LiveRun) -> int:
    """Read output until the process exits (and its pipe closes, or lingers too long)."""
    fd = proc.stdout.fileno()
    exited_at = None
    while True:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break  # EOF: every writer is gone
            tail.add(chunk)
        if exited_at is None and proc.poll() is not None:
            exited_at = time.monotonic()
        if exited_at is not None and time.monotonic() - exited_at > timing.PIPE_LINGER:
            break  # a grandchild holds the pipe: do not let it hold the run
        live.enforce_deadline()  # the Timer does not count time asleep; elapsed time does
    return proc.wait()


# -- declarative HTTP checks --------------------------------------------------------------


def run_checks(job: JobSpec, ctx: RunContext, live: LiveRun) -> dict:
    live.redactor.add(v for c in job.checks for v in c.headers.values())
    try:
        for check in job.checks:
            with ctx.step(check.name):
                _check(check, job, ctx)
    finally:
        # Checks the run ended before: "skipped" steps (written with the run's end), so
        # the record shows every check.
        for check in job.checks[len(ctx.findings.steps) :]:
            ctx.findings.steps.append(StepRecord(live.redact(check.name), status=SKIPPED))
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


def execute(job: JobSpec, ctx: RunContext, live: LiveRun) -> Any:
    return KINDS[job.kind](job, ctx, live)
