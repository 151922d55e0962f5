"""One run, start to terminal status: the row first, then the work, then the verdict.

Each run has its own daemon thread and a deadline ``threading.Timer``. The abort (deadline,
cancel, replace, stop) sets the run's abort flag, breaks off its HTTP and signals its
process group; if the run still has not ended ``abort_grace`` later, the runner records its
status itself, logs where the thread is stuck, and counts it as leaked. Nothing ever waits
on a leaked thread.

Every ending goes through ``Runner.end``: the run's own thread returning or raising, a
give-up, a thread that could not start. It decides once; a later finisher changes nothing.
When the database refuses the write, the verdict is kept (a *pending end*) and the daemon's
tick writes it until it lands: the run no longer counts as live, and the status finally
written is the true one.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from beaconlite import clock, kinds, process, store, timing
from beaconlite.config import Config, JobSpec
from beaconlite.context import RunContext
from beaconlite.durations import format_duration
from beaconlite.errors import RunAborted, RunCancelled, RunTimeout, WriteFailed
from beaconlite.redaction import Redactor, one_line
from beaconlite.statuses import ERROR, SUCCESS, WARNING
from beaconlite.verdict import Findings, describe_exception, from_steps, summary_json

log = logging.getLogger(__name__)


@dataclass
class Verdict:
    """How a run ended, kept until its row says so."""

    status: str
    error: str | None = None
    summary: str | None = None  # JSON text
    output: str | None = None
    finished_at: float = 0.0
    duration_s: float | None = None
    suspended_s: float | None = None
    steps: list[dict] = field(default_factory=list)  # step rows the database refused so far


class _LiveRun:
    """A run in this process: its abort state, its thread, its HTTP and its process.

    The runner's own: it implements ``RunControl`` for the run's context and job kind, and
    ``Runner.start`` hands it back as a handle (``ended``, ``verdict``, ``abort``).
    """

    def __init__(self, runner: Runner, run_id: int, job: JobSpec, trigger: str, scheduled_at: float,
                 attempt: int, started_at: float):  # fmt: skip
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
        self.import_paths = kinds.import_paths(runner.config)  # the config it started under
        self.redactor = Redactor(runner.config.secrets)
        self.abort_grace = runner.config.daemon.abort_grace
        self.aborted: RunAborted | None = None
        self.aborted_elapsed: float | None = None
        self.work_done = False
        self.disowned: str | None = None  # the status someone else recorded for it
        self.verdict: Verdict | None = None  # decided (recorded, or pending)
        self.ended = threading.Event()  # the row is terminal (or lost to someone else)
        self.output: str | None = None
        self.findings = Findings()
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._process = None
        self._session = None
        self._timers: list[threading.Timer] = []

    # -- RunControl: what the run's own code calls -----------------------------------------

    def redact(self, text):
        return self.redactor(text)

    def add_secrets(self, values) -> None:
        self.redactor.add(values)

    def keep_output(self, text: str) -> None:
        self.output = text

    def remaining(self) -> float:
        return self.deadline_elapsed - clock.elapsed()

    def ended_elsewhere(self, status: str | None) -> None:
        self.runner.disown(self.run_id, status)

    def http_session(self):
        self.checkpoint()  # no session, and so no request, for a run that has ended
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
        """Raise the abort when due; once the run has ended, always raise."""
        self.enforce_deadline()
        aborted = self.aborted
        if aborted is not None:
            raise type(aborted)(aborted.reason)
        if self.work_done or self.verdict is not None:
            raise RunAborted("the run has ended")

    def attach_process(self, proc) -> None:
        with self._lock:
            self._process = proc
            aborted = self.aborted is not None
        if aborted:
            process.kill_group(proc.pid, signal.SIGKILL)

    def kill_process(self) -> None:
        """SIGKILL the run's process group now (a stopping daemon waits no longer)."""
        with self._lock:
            proc = self._process
        if proc is not None:
            process.kill_group(proc.pid, signal.SIGKILL)

    def finish_work(self) -> None:
        """The work ended: from now on an abort has nothing to stop."""
        with self._lock:
            self.work_done = True

    # -- what other threads call ----------------------------------------------------------

    def abort(self, kind: type[RunAborted], reason: str) -> bool:
        """Stop the run: flag, HTTP break-off, process-group SIGTERM (SIGKILL 5 s later)."""
        with self._lock:
            if self.aborted is not None or self.work_done or self.verdict is not None:
                return False
            self.aborted = kind(reason)
            self.aborted_elapsed = clock.elapsed()
            session, proc = self._session, self._process
        log.info(
            "%s: aborted: %s",
            self.label,
            reason,
            extra={"event": "run.abort", "job": self.job.name, "run_id": self.run_id},
        )
        if session is not None:
            session.break_off()
        if proc is not None:
            process.kill_group(proc.pid, signal.SIGTERM)
            self._later(timing.KILL_AFTER, process.kill_group, proc.pid, signal.SIGKILL)
        # The tick gives up on it too (Runner.watch): this timer only makes it prompt.
        self._later(self.give_up_after(), self.runner.give_up, self)
        return True

    def give_up_after(self) -> float:
        return self.abort_grace + (timing.KILL_AFTER if self._process is not None else 0.0)

    @property
    def label(self) -> str:
        return f"{self.job.name} #{self.run_id}"

    def _later(self, delay: float, fn: Callable, *args) -> None:
        """A timer thread; when none can start, the tick's watch does the same job later."""

        def fire():
            try:
                fn(*args)
            finally:
                store.close()  # a timer thread may have opened a connection; it ends here

        timer = threading.Timer(max(0.0, delay), fire)
        timer.daemon = True
        timer.name = f"run-{self.run_id}-timer"
        try:
            timer.start()
        except RuntimeError:
            log.warning("%s: cannot start a timer thread; the tick will act instead", self.label)
            return
        self._timers.append(timer)

    def cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()


@dataclass(frozen=True)
class RunEnd:
    """A run's recorded end, as the daemon's follow-ups (retries, notifications) see it."""

    run_id: int
    job: str
    attempt: int
    scheduled_at: float
    status: str


class CannotStart(Exception):
    """A thread the run needs could not start."""


@contextmanager
def deadline_scope(live: _LiveRun):
    """The run's deadline Timer for the duration of the block; its exit always cancels it."""
    timer = threading.Timer(
        max(0.0, live.deadline_elapsed - clock.elapsed()),
        live.abort,
        (RunTimeout, f"deadline of {format_duration(live.job.timeout)} passed"),
    )
    timer.daemon = True
    timer.name = f"run-{live.run_id}-deadline"
    try:
        timer.start()
    except RuntimeError as e:
        raise CannotStart(f"cannot start a thread: {e}") from None
    try:
        yield
    finally:
        timer.cancel()


class Runner:
    """Starts runs and keeps the live ones; the daemon and `beaconlite run` both use it.

    ``gate``: a lock the scheduler holds while it records a batch of due runs; each run
    waits on it before doing any work (the daemon's; a foreground run has none).
    """

    def __init__(
        self,
        config: Config,
        instance_id: int | None,
        on_end: Callable[[RunEnd], None] | None = None,
        gate: threading.Lock | None = None,
    ):
        self.config = config
        self.instance_id = instance_id
        self.on_end = on_end
        self.gate = gate
        self._lock = threading.Lock()
        self._live: dict[int, _LiveRun] = {}  # working, or aborted and on its way out
        self._pending: dict[int, _LiveRun] = {}  # ended, but the database refused the record
        self._leaked: list[_LiveRun] = []

    def start(self, job: JobSpec, trigger: str, scheduled_at: float, attempt: int = 1) -> _LiveRun:
        """Record the run (SlotTaken if its slot already ran; WriteFailed if the database
        refused), then start its thread. A thread that cannot start ends the run at once."""
        now = clock.wall()
        run_id = store.start_run(
            job.name, trigger, scheduled_at, attempt, now + job.timeout, self.instance_id, now
        )
        live = _LiveRun(self, run_id, job, trigger, scheduled_at, attempt, now)
        with self._lock:
            self._live[run_id] = live
        log.info(
            "%s: started (%s)",
            live.label,
            trigger,
            extra={"event": "run.start", "job": job.name, "run_id": run_id},
        )
        try:
            live.thread = threading.Thread(
                target=self._run, args=(live,), daemon=True, name=f"run-{run_id}-{job.name}"
            )
            live.thread.start()
        except RuntimeError as e:
            live.thread = None
            self.end(live, self._failed(live, f"cannot start a thread: {e}"))
        return live

    def live_runs(self) -> list[_LiveRun]:
        """Runs whose end is not decided yet (pending ends are not live)."""
        with self._lock:
            return list(self._live.values())

    def pending_ends(self) -> list[_LiveRun]:
        with self._lock:
            return list(self._pending.values())

    def get(self, run_id: int) -> _LiveRun | None:
        with self._lock:
            return self._live.get(run_id)

    def occupancy(self, job: str) -> tuple[list[int], int]:
        """(the job's live runs not already aborting, oldest first; such runs of every job)."""
        working = [r for r in self.live_runs() if r.aborted is None]
        return sorted(r.run_id for r in working if r.job.name == job), len(working)

    def abort(self, run_id: int, kind: type[RunAborted], reason: str) -> bool:
        """Abort a live run of this process; False when it is not (or no longer) live."""
        live = self.get(run_id)
        return live is not None and live.abort(kind, reason)

    def leaked_threads(self) -> int:
        with self._lock:
            self._leaked = [r for r in self._leaked if r.thread is not None and r.thread.is_alive()]
            return len(self._leaked)

    def watch(self) -> None:
        """The tick's look at live runs: abort the overdue (the Timer misses time asleep) and
        give up on those aborted longer than their grace ago (in case no timer could start)."""
        now = clock.elapsed()
        for live in self.live_runs():
            live.enforce_deadline()
            if live.aborted_elapsed is not None and now - live.aborted_elapsed >= live.give_up_after():
                self.give_up(live)

    def abort_all(self, reason: str) -> None:
        for live in self.live_runs():
            live.abort(RunCancelled, reason)

    def disown(self, run_id: int, status: str | None) -> None:
        """Someone else recorded this run's end: stop its work and write nothing more for it."""
        live = self.get(run_id)
        if live is None:
            return
        live.disowned = status or "gone"
        live.abort(RunCancelled, f"its end was recorded elsewhere as {live.disowned}")

    # -- the run thread -------------------------------------------------------------------

    def _run(self, live: _LiveRun) -> None:
        verdict = None
        try:
            if self.gate is not None:
                with self.gate:  # held while the scheduler records a batch of due runs
                    pass
            with deadline_scope(live):
                summary, failure = self._work(live)
            verdict = self._decide(live, summary, failure)
        except CannotStart as e:
            verdict = self._failed(live, str(e))
        except BaseException as e:  # beaconlite's own failure: the run still ends
            log.exception("%s: deciding its end failed", live.label)
            verdict = self._failed(live, f"beaconlite could not decide the run's end: {type(e).__name__}")
        finally:
            try:
                self.end(live, verdict or self._failed(live, "the run's thread ended without a verdict"))
            finally:
                store.close()  # this thread's connection: threads come and go, descriptors must not

    def _work(self, live: _LiveRun) -> tuple[Any, BaseException | None]:
        ctx = RunContext(live)
        try:
            return kinds.execute(live, ctx), None
        except BaseException as e:  # the job's own code: anything at all becomes data
            return None, e

    def _decide(self, live: _LiveRun, summary: Any, failure: BaseException | None) -> Verdict:
        live.finish_work()
        findings = live.findings
        output = live.output
        summary_text, summary_problem = summary_json(summary)
        if live.aborted is not None:
            status, error = live.aborted.status, live.aborted.reason
        elif failure is not None:
            # A RunAborted the job raised itself, with no abort pending, is an ordinary error.
            status = ERROR
            error, trace = describe_exception(failure)
            findings.tracebacks.append(trace)
        else:
            status, error = from_steps(findings, live.job.min_success_rate)
            if summary_problem:
                error = summary_problem if error is None else f"{error}; {summary_problem}"
                if status == SUCCESS:
                    status = WARNING
        if live.job.kind != "command" and findings.tracebacks:
            output = "\n".join(t for t in findings.tracebacks if t)[-process.OUTPUT_TAIL :]
        return self._verdict(live, status, error, summary_text, output)

    def _failed(self, live: _LiveRun, error: str) -> Verdict:
        return self._verdict(live, ERROR, error, None, None)

    def _verdict(self, live: _LiveRun, status: str, error, summary, output) -> Verdict:
        elapsed = clock.elapsed() - live.started_elapsed
        suspended = elapsed - (clock.monotonic() - live.started_monotonic)
        return Verdict(
            status=status,
            error=live.redact(one_line(error)) if error else None,
            summary=live.redact(summary),
            output=live.redact(output),
            finished_at=clock.wall(),
            duration_s=round(elapsed, 6),
            suspended_s=round(suspended, 3) if suspended > 0.5 else None,
            steps=[s.as_row() for s in live.findings.steps if not s.written],
        )

    # -- the one owner of a run's end -----------------------------------------------------

    def end(self, live: _LiveRun, verdict: Verdict) -> None:
        """Decide the run's end (once: a later finisher changes nothing) and record it."""
        with live._lock:
            first = live.verdict is None
            if first:
                live.verdict = verdict
                live.work_done = True
        if not first:
            with self._lock:  # a leaked thread that finally ended no longer counts
                self._leaked = [r for r in self._leaked if r is not live]
            log.info(
                "%s: its thread ended after the run was recorded as %s; keeping that",
                live.label,
                live.verdict.status,
                extra={"event": "run.late", "job": live.job.name, "run_id": live.run_id},
            )
            return
        live.cancel_timers()
        with self._lock:
            self._live.pop(live.run_id, None)
            self._pending[live.run_id] = live
        self._record(live)

    def _record(self, live: _LiveRun) -> bool:
        """Write a decided end; False (kept pending) when the database refuses it."""
        verdict = live.verdict
        if live.disowned is not None:
            won, status = False, live.disowned
        else:
            try:
                with store.patience(timing.RUN_WRITE_WAIT):
                    won = store.finish_run(
                        live.run_id,
                        verdict.status,
                        verdict.finished_at,
                        error=verdict.error,
                        summary=verdict.summary,
                        output=verdict.output,
                        duration_s=verdict.duration_s,
                        suspended_s=verdict.suspended_s,
                        steps=verdict.steps,
                    )
            except WriteFailed:
                return False  # pending: the tick tries again (the outage is logged once)
            status = verdict.status if won else (store.run_status(live.run_id) or verdict.status)
        with self._lock:
            self._pending.pop(live.run_id, None)
        if won:
            log.info(
                "%s: %s in %.3fs%s",
                live.label,
                status,
                verdict.duration_s or 0.0,
                f": {one_line(verdict.error, 200)}" if verdict.error else "",
                extra={
                    "event": "run.finish",
                    "job": live.job.name,
                    "run_id": live.run_id,
                    "status": status,
                    "duration_s": round(verdict.duration_s or 0.0, 3),
                },
            )
        else:
            log.info(
                "%s: ended as %s, but it was already recorded as %s; keeping that",
                live.label,
                verdict.status,
                status,
                extra={"event": "run.late", "job": live.job.name, "run_id": live.run_id},
            )
        live.ended.set()
        if self.on_end is not None:
            try:
                self.on_end(RunEnd(live.run_id, live.job.name, live.attempt, live.scheduled_at, status))
            except Exception:
                log.exception("%s: after its end", live.label)
        return True

    def record_pending(self) -> int:
        """Write pending ends, oldest first, until one is refused; how many are left."""
        for live in self.pending_ends():
            if not self._record(live):
                break
        return len(self.pending_ends())

    def give_up(self, live: _LiveRun) -> None:
        """abort_grace after an abort, the run still has not ended: record it ourselves."""
        aborted = live.aborted
        if live.verdict is not None or aborted is None:
            return
        thread = live.thread
        frame = sys._current_frames().get(thread.ident) if thread is not None else None
        frames = traceback.extract_stack(frame)[-6:] if frame else []  # innermost first
        stack = " <- ".join(f"{f.filename}:{f.lineno} in {f.name}" for f in reversed(frames))
        grace = format_duration(live.give_up_after())
        log.error(
            "%s: did not end %s after its abort (%s); recording it as %s, thread leaked; stuck at: %s",
            live.label,
            grace,
            aborted.reason,
            aborted.status,
            stack or "?",
            extra={
                "event": "run.leaked",
                "job": live.job.name,
                "run_id": live.run_id,
                "status": aborted.status,
            },
        )
        if thread is not None and thread.is_alive():
            with self._lock:
                self._leaked.append(live)
            if self.instance_id is not None:  # health shows it (the daemon's tick keeps it current)
                try:
                    with store.patience(timing.RUN_WRITE_WAIT):
                        store.set_leaked_threads(self.instance_id, self.leaked_threads())
                except WriteFailed:
                    pass
        verdict = self._verdict(
            live,
            aborted.status,
            f"{aborted.reason}; did not end within {grace} of its abort and was abandoned",
            None,
            live.output,
        )
        self.end(live, verdict)
