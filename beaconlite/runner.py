"""One run, start to terminal status: the row first, then the work, then the verdict.

Each run has its own daemon thread and a deadline ``threading.Timer``. The abort (deadline,
cancel, replace, stop) sets the run's abort flag, breaks off its HTTP and signals its
process group; if the run still has not ended ``abort_grace`` later, the runner records its
status itself, logs where the thread is stuck, and counts it as leaked. Nothing ever waits
on a leaked thread.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from beaconlite import clock, kinds, store
from beaconlite.config import Config, JobSpec, import_paths
from beaconlite.context import Findings, RunContext
from beaconlite.errors import RunAborted, RunCancelled, RunTimeout, StepFailed
from beaconlite.redaction import Redactor, one_line
from beaconlite.units import format_duration

log = logging.getLogger(__name__)

KILL_AFTER = 5.0  # SIGTERM to the process group, then SIGKILL this much later
OK = ("success", "warning")


def verdict(findings: Findings, min_success_rate: float) -> tuple[str, str | None]:
    """The run's status from its ended steps (SPEC section 3) and its error line."""
    steps = findings.steps
    if not steps:
        return ("warning", None) if findings.warnings else ("success", None)
    ok = sum(1 for s in steps if s.status in OK)
    failed = [s for s in steps if s.status not in OK]
    rate = ok / len(steps)
    first = f": {failed[0].name}: {failed[0].error}" if failed and failed[0].error else ""
    if rate < min_success_rate:
        return "error", f"{len(failed)} of {len(steps)} steps failed{first}"
    if failed:
        return "warning", (
            f"{len(failed)} of {len(steps)} steps failed (success rate "
            f"{rate:.2f} >= {min_success_rate:g}){first}"
        )
    if findings.warnings or any(s.status == "warning" for s in steps):
        return "warning", None
    return "success", None


class LiveRun:
    """A run in this process: its abort state, its thread, its HTTP and its process."""

    def __init__(
        self,
        runner: Runner,
        run_id: int,
        job: JobSpec,
        trigger: str,
        scheduled_at: float,
        attempt: int,
        started_at: float,
    ):
        self.runner = runner
        self.run_id = run_id
        self.job = job
        self.trigger = trigger
        self.scheduled_at = scheduled_at
        self.attempt = attempt
        self.started_at = started_at
        self.deadline_at = started_at + job.timeout
        self.started_elapsed = clock.elapsed()
        self.started_monotonic = clock.monotonic()
        self.deadline_elapsed = self.started_elapsed + job.timeout
        self.import_paths = import_paths(runner.config)  # the config it started under
        self.redactor = Redactor(runner.config.secrets)
        self.aborted: RunAborted | None = None
        self.work_done = False
        self.ended = threading.Event()  # the row is terminal (by the thread or by give-up)
        self.output: str | None = None
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._process = None
        self._session = None
        self._timers: list[threading.Timer] = []

    # -- what the run's own thread calls --------------------------------------------------

    def redact(self, text):
        return self.redactor(text)

    def http_session(self):
        with self._lock:
            if self._session is None:
                from beaconlite.http import RunSession

                self._session = RunSession(
                    self.job.http,
                    self.checkpoint,
                    lambda: self.deadline_elapsed - clock.elapsed(),
                    self.redactor.add,
                )
                if self.aborted is not None:
                    self._session.break_off()
            return self._session

    def overdue(self) -> bool:
        return clock.elapsed() >= self.deadline_elapsed

    def enforce_deadline(self) -> None:
        """Abort when the deadline passed by elapsed time (the Timer misses time asleep)."""
        if self.aborted is None and self.overdue():
            self.abort(RunTimeout, f"deadline of {format_duration(self.job.timeout)} passed")

    def checkpoint(self) -> None:
        self.enforce_deadline()
        aborted = self.aborted
        if aborted is not None:
            raise type(aborted)(aborted.reason)

    def attach_process(self, proc) -> None:
        with self._lock:
            self._process = proc
            aborted = self.aborted is not None
        if aborted:
            kinds.kill_group(proc.pid, signal.SIGKILL)

    def kill_process(self) -> None:
        """SIGKILL the run's process group now (a stopping daemon waits no longer)."""
        with self._lock:
            process = self._process
        if process is not None:
            kinds.kill_group(process.pid, signal.SIGKILL)

    def finish_work(self) -> bool:
        """The work ended: from now on an abort has nothing to stop. False if it came first."""
        with self._lock:
            if self.aborted is None:
                self.work_done = True
            return self.work_done

    # -- what other threads call ----------------------------------------------------------

    def abort(self, kind: type[RunAborted], reason: str) -> bool:
        """Stop the run: flag, HTTP break-off, process-group SIGTERM (SIGKILL 5 s later)."""
        with self._lock:
            if self.aborted is not None or self.work_done or self.ended.is_set():
                return False
            self.aborted = kind(reason)
            session, process = self._session, self._process
        log.info(
            "run %d (%s) aborted: %s",
            self.run_id,
            self.job.name,
            reason,
            extra={"event": "run.abort", "job": self.job.name, "run_id": self.run_id},
        )
        if session is not None:
            session.break_off()
        grace = self.runner.config.daemon.abort_grace
        if process is not None:
            kinds.kill_group(process.pid, signal.SIGTERM)
            self._later(KILL_AFTER, kinds.kill_group, process.pid, signal.SIGKILL)
            grace += KILL_AFTER
        self._later(grace, self.runner.give_up, self)
        return True

    def _later(self, delay: float, fn: Callable, *args) -> None:
        def fire():
            try:
                fn(*args)
            finally:
                store.close()  # a timer thread may have opened a connection; it ends here

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        timer.name = f"run-{self.run_id}-timer"
        self._timers.append(timer)
        timer.start()

    def cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()


class Runner:
    """Starts runs and keeps the live ones; the daemon and `beaconlite run` both use it."""

    def __init__(
        self, config: Config, instance_id: int | None, on_end: Callable[[LiveRun, str], None] | None = None
    ):
        self.config = config
        self.instance_id = instance_id
        self.on_end = on_end
        self._lock = threading.Lock()
        self._live: dict[int, LiveRun] = {}
        self._leaked: list[LiveRun] = []
        self.start_gate = threading.Lock()

    def start(self, job: JobSpec, trigger: str, scheduled_at: float, attempt: int = 1) -> LiveRun:
        """Record the run (SlotTaken if its slot already ran), then start its thread."""
        now = clock.wall()
        run_id = store.start_run(
            job.name, trigger, scheduled_at, attempt, now + job.timeout, self.instance_id, now
        )
        live = LiveRun(self, run_id, job, trigger, scheduled_at, attempt, now)
        live.thread = threading.Thread(
            target=self._run, args=(live,), daemon=True, name=f"run-{run_id}-{job.name}"
        )
        with self._lock:
            self._live[run_id] = live
        log.info(
            "run %d (%s) started (%s)",
            run_id,
            job.name,
            trigger,
            extra={"event": "run.start", "job": job.name, "run_id": run_id},
        )
        live.thread.start()
        return live

    def live_runs(self) -> list[LiveRun]:
        with self._lock:
            return list(self._live.values())

    def get(self, run_id: int) -> LiveRun | None:
        with self._lock:
            return self._live.get(run_id)

    def leaked_threads(self) -> int:
        with self._lock:
            self._leaked = [r for r in self._leaked if r.thread.is_alive()]
            return len(self._leaked)

    def enforce_deadlines(self) -> None:
        for live in self.live_runs():
            live.enforce_deadline()

    def abort_all(self, reason: str) -> None:
        for live in self.live_runs():
            live.abort(RunCancelled, reason)

    # -- the run thread -------------------------------------------------------------------

    def _run(self, live: LiveRun) -> None:
        with self.start_gate:  # held while the scheduler submits a batch of due runs
            pass
        # The deadline Timer is started here, not by the firing thread: one thread start
        # less on the scheduler's path. Its delay counts from the recorded start.
        live._later(
            live.deadline_elapsed - clock.elapsed(),
            live.abort,
            RunTimeout,
            f"deadline of {format_duration(live.job.timeout)} passed",
        )
        ctx = RunContext(live)
        summary: Any = None
        failure: BaseException | None = None
        try:
            summary = kinds.execute(live.job, ctx, live)
        except RunAborted:
            pass
        except BaseException as e:  # the job's own code: anything at all becomes data
            failure = e
            ctx.findings.tracebacks.append(live.redact(traceback.format_exc()))
        live.finish_work()
        if live.aborted is not None:
            status, error = live.aborted.status, live.aborted.reason
        elif failure is not None:
            status = "error"
            error = (
                str(failure) if isinstance(failure, StepFailed) else (f"{type(failure).__name__}: {failure}")
            )
        else:
            status, error = verdict(ctx.findings, live.job.min_success_rate)
        live.cancel_timers()
        output = live.output
        if live.job.kind != "command" and ctx.findings.tracebacks:
            output = "\n".join(ctx.findings.tracebacks)[-kinds.OUTPUT_TAIL :]
        try:
            self._finish(live, status, error, summary, output)
        finally:
            store.close()  # this thread's connection: threads come and go, descriptors must not

    def _finish(self, live: LiveRun, status: str, error: str | None, summary, output) -> None:
        elapsed = clock.elapsed() - live.started_elapsed
        suspended = elapsed - (clock.monotonic() - live.started_monotonic)
        try:
            won = store.finish_run(
                live.run_id,
                status,
                clock.wall(),
                error=live.redact(one_line(error)) if error else None,
                summary=summary
                if isinstance(summary, (dict, list)) or summary is None
                else {"result": summary},
                output=live.redact(output),
                duration_s=round(elapsed, 6),
                suspended_s=round(suspended, 3) if suspended > 0.5 else None,
            )
        except Exception:
            log.exception("run %d (%s): cannot record its end", live.run_id, live.job.name)
            won = False
        if won:
            log.info(
                "run %d (%s) %s in %.3fs%s",
                live.run_id,
                live.job.name,
                status,
                elapsed,
                f": {live.redact(one_line(error, 200))}" if error else "",
                extra={
                    "event": "run.finish",
                    "job": live.job.name,
                    "run_id": live.run_id,
                    "status": status,
                    "duration_s": round(elapsed, 3),
                },
            )
        else:
            status = store.run_status(live.run_id) or status
            log.info(
                "run %d (%s) ended after it was recorded as %s; keeping that",
                live.run_id,
                live.job.name,
                status,
                extra={"event": "run.late", "job": live.job.name, "run_id": live.run_id},
            )
        self._ended(live, status)

    def give_up(self, live: LiveRun) -> None:
        """abort_grace after an abort, the run still has not ended: record it ourselves."""
        if live.ended.is_set() or not live.thread.is_alive():
            return
        aborted = live.aborted
        grace = self.config.daemon.abort_grace
        frame = sys._current_frames().get(live.thread.ident)
        frames = traceback.extract_stack(frame)[-6:] if frame else []  # innermost first
        stack = " <- ".join(f"{f.filename}:{f.lineno} in {f.name}" for f in reversed(frames))
        won = store.finish_abandoned(
            live.run_id,
            aborted.status,
            live.redact(
                one_line(
                    f"{aborted.reason}; did not end within abort_grace "
                    f"({format_duration(grace)}) and was abandoned"
                )
            ),
            clock.wall(),
        )
        log.error(
            "run %d (%s) did not end %s after its abort (%s); recorded as %s, thread leaked; stuck at: %s",
            live.run_id,
            live.job.name,
            format_duration(grace),
            aborted.reason,
            aborted.status,
            stack,
            extra={
                "event": "run.leaked",
                "job": live.job.name,
                "run_id": live.run_id,
                "status": aborted.status,
            },
        )
        with self._lock:
            self._leaked.append(live)
        if self.instance_id is not None:
            store.set_leaked_threads(self.instance_id, self.leaked_threads())
        self._ended(live, aborted.status if won else (store.run_status(live.run_id) or "?"))

    def _ended(self, live: LiveRun, status: str) -> None:
        with self._lock:
            if live.ended.is_set():
                # A leaked thread that finally ended: it no longer counts.
                leaked_before = len(self._leaked)
                self._leaked = [r for r in self._leaked if r is not live]
                changed = len(self._leaked) != leaked_before
            else:
                changed = False
            first = not live.ended.is_set()
            live.ended.set()
            self._live.pop(live.run_id, None)
        if changed and self.instance_id is not None:
            store.set_leaked_threads(self.instance_id, self.leaked_threads())
        if first and self.on_end is not None:
            try:
                self.on_end(live, status)
            except Exception:
                log.exception("after run %d (%s)", live.run_id, live.job.name)
