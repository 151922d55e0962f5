"""A run in this process: its abort state, its deadline, its thread, HTTP and process.

The abort (deadline, cancel, replace, stop) sets the run's abort flag, breaks off its HTTP
and signals its process group (SIGTERM, then SIGKILL ``timing.KILL_AFTER`` later); the
runner gives up on it ``abort_grace`` after that. Its deadline is an alarm (one thread
rings every run's, ``alarms``) on the monotonic clock, which stops while the machine sleeps:
checkpoints and the tick also compare elapsed time with the deadline.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager

from beaconlite import alarms, clock, process, timing
from beaconlite.capture import RunOutput
from beaconlite.config import Config, JobSpec
from beaconlite.durations import format_duration
from beaconlite.errors import RunAborted, RunTimeout
from beaconlite.redaction import Redactor
from beaconlite.verdict import Findings, Verdict

log = logging.getLogger("beaconlite.runner")


class LiveRun:
    """A run in this process: its abort state, its thread, its HTTP and its process.

    Created and ended by the runner only; it implements ``RunControl`` for the run's
    context and job kind, and ``Runner.start`` hands it back as a handle (``ended``,
    ``verdict``, ``abort``). What it cannot do itself goes back through callbacks:
    ``give_up`` (the abort's grace ran out), ``disown`` (someone else ended the run) and
    ``aborting`` (it no longer counts against the job's and the daemon's limits).
    """

    def __init__(self, config: Config, run_id: int, job: JobSpec, trigger: str, scheduled_at: float,
                 attempt: int, started_at: float, target: Callable | None,
                 give_up: Callable[[LiveRun], None], disown: Callable[[int, str | None], None],
                 aborting: Callable[[LiveRun], None]):  # fmt: skip
        self.run_id = run_id
        self.instance_id: int | None = None  # the instance that started it (set by the runner)
        self.job = job
        self.trigger = trigger
        self.scheduled_at = scheduled_at
        self.attempt = attempt
        self.started_at = started_at
        self.deadline_at = started_at + job.timeout
        self.started_elapsed = clock.elapsed()
        self.started_monotonic = clock.monotonic()
        self.deadline_elapsed = self.started_elapsed + job.timeout
        self.target = target  # a Python run's function: a reload never changes it under us
        self.redactor = Redactor(config.secrets)
        self.abort_grace = config.daemon.abort_grace
        self._give_up = give_up
        self._disown = disown
        self._aborting = aborting
        self.aborted: RunAborted | None = None
        self.aborted_elapsed: float | None = None
        self.work_done = False
        self.disowned: str | None = None  # the status someone else recorded for it
        self.verdict: Verdict | None = None  # decided (recorded, or pending)
        self.ended = threading.Event()  # the row is terminal (or lost to someone else)
        self.output: str | None = None  # a command's output tail, redacted
        self.captured = RunOutput()  # a Python run's ctx.log, print() and logging
        self.findings = Findings()
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._process = None
        self._session = None
        self._timers: list[alarms.Alarm] = []

    # -- RunControl: what the run's own code calls -----------------------------------------

    def keep_output(self, text: str, cut_before: bool) -> None:
        # Redacted whole, then cut: a cut first could leave a piece of a secret.
        self.output = process.last_bytes(self.redactor(text, cut_before=cut_before))

    def remaining(self) -> float:
        return self.deadline_elapsed - clock.elapsed()

    def waiting_for(self) -> str | None:
        with self._lock:
            session, proc = self._session, self._process
        if session is not None and session.current:
            return session.current
        if proc is not None:
            return f"the command (pid {proc.pid})"
        return None

    def ended_elsewhere(self, status: str | None) -> None:
        self._disown(self.run_id, status)

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
        """Abort when the deadline passed by elapsed time (the alarm misses time asleep)."""
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
        self._aborting(self)
        self.say(logging.INFO, "run.abort", "aborted: %s", reason)
        if session is not None:
            session.break_off()
        if proc is not None:
            process.kill_group(proc.pid, signal.SIGTERM)
            self._later(timing.KILL_AFTER, process.kill_group, proc.pid, signal.SIGKILL)
        # The tick gives up on it too (Runner.watch): this timer only makes it prompt.
        self._later(self.give_up_after(), self._give_up, self)
        return True

    def give_up_after(self) -> float:
        return self.abort_grace + (timing.KILL_AFTER if self._process is not None else 0.0)

    @property
    def label(self) -> str:
        return f"{self.job.name} #{self.run_id}"

    def say(self, level: int, event: str, message: str, *args, **fields) -> None:
        """A log line about this run: "job #id: message", with its event, job and run id."""
        extra = {"event": event, "job": self.job.name, "run_id": self.run_id, **fields}
        log.log(level, "%s: " + message, self.label, *args, extra=extra)

    def _later(self, delay: float, fn: Callable, *args) -> None:
        """A timed action; when the alarm thread cannot start, the tick's watch does the
        same job later."""
        try:
            self._timers.append(alarms.runs.after(delay, fn, *args))
        except RuntimeError:
            log.warning("%s: cannot start the alarm thread; the tick will act instead", self.label)

    def cancel_timers(self) -> None:
        for timer in self._timers:
            alarms.runs.cancel(timer)


class CannotStart(Exception):
    """A thread the run needs could not start."""


@contextmanager
def deadline_scope(live: LiveRun):
    """The run's deadline alarm for the duration of the block; its exit always cancels it."""
    try:
        alarm = alarms.runs.after(
            live.deadline_elapsed - clock.elapsed(),
            live.abort,
            RunTimeout,
            f"deadline of {format_duration(live.job.timeout)} passed",
        )
    except RuntimeError as e:
        raise CannotStart(f"cannot start a thread: {e}") from None
    try:
        yield
    finally:
        alarms.runs.cancel(alarm)
