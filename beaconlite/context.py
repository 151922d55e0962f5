"""RunContext: what a Python integrity run sees (steps, checkpoints, warnings, HTTP), and
``RunControl``: the one narrow view of its run that the context and the job kinds get.

The runner implements RunControl; nothing here calls the runner itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from beaconlite import clock, store, timing
from beaconlite.errors import RunAborted, RunCancelled, RunEnded, StepFailed, WriteFailed
from beaconlite.statuses import ERROR, RUNNING, SUCCESS, WARNING
from beaconlite.verdict import Findings, StepRecord, bounded, describe_exception, type_name

if TYPE_CHECKING:
    import subprocess

    from beaconlite.capture import RunOutput
    from beaconlite.config import JobSpec
    from beaconlite.http import RunSession
    from beaconlite.redaction import Redactor

log = logging.getLogger("beaconlite.run")


def _text(value: Any) -> str:
    """str() of a value from job code, bounded (its __str__ may raise or block)."""
    if type(value) is str:
        return value
    ok, text = bounded(lambda: str(value))
    return text if ok and isinstance(text, str) else f"<{type_name(value)}>"


class RunControl(Protocol):
    """What a run's code may ask of the run that hosts it."""

    run_id: int
    instance_id: int | None  # the instance whose run this is: its writes are conditional on it
    job: JobSpec
    scheduled_at: float
    deadline_at: float
    target: Callable | None  # a Python run's function, as loaded when the run started
    findings: Findings
    redactor: Redactor  # the one redaction pass, with this run's secrets (header values too)
    captured: RunOutput  # what a Python run writes: ctx.log, and its thread's print() and logging

    @property
    def label(self) -> str:
        """ "job #id", for log lines."""

    def checkpoint(self) -> None:
        """Raise the run's RunAborted when it is due to stop (RunAborted once it ended)."""

    def enforce_deadline(self) -> None:
        """Abort the run if its deadline passed by elapsed time (never raises)."""

    def remaining(self) -> float:
        """Seconds left before the deadline (elapsed time: counts time asleep)."""

    def http_session(self) -> RunSession:
        """The run's HTTP session (refused once the run is aborted)."""

    def attach_process(self, proc: subprocess.Popen) -> None:
        """The run's command: the abort signals its process group."""

    def keep_output(self, text: str, cut_before: bool) -> None:
        """The run's output tail (a command's stdout and stderr); ``cut_before``: the text
        begins where earlier output was dropped."""

    def ended_elsewhere(self, status: str | None) -> None:
        """A write found the run's end recorded by someone else: stop working on it."""

    def waiting_for(self) -> str | None:
        """What the run is waiting on now, for a step's error: a request, a command."""


class RunLog(logging.LoggerAdapter):
    """``ctx.log``: a logger whose lines carry the run's job and id, and are redacted with
    the run's own secrets (header values it sent included) before anything else sees them."""

    def __init__(self, run: RunControl):
        super().__init__(log, {"run_id": run.run_id, "job": run.job.name})
        self._run = run

    def log(self, level, msg, *args, **kwargs):
        if level < logging.INFO and not self.isEnabledFor(level):
            return
        text = _text(msg)
        if args:
            try:
                text = text % args
            except (TypeError, ValueError):  # as logging does: the line still gets out
                text = f"{text} {' '.join(_text(a) for a in args)}"
        if level >= logging.INFO:  # kept with the run (redacted with the rest of its output)
            self._run.captured.line(f"{logging.getLevelName(level)} {text}")
        if self.isEnabledFor(level):
            kwargs["extra"] = {**self.extra, **kwargs.get("extra", {})}
            self.logger.log(level, "%s", self._run.redactor(text), **kwargs)


class RunContext:
    """Handed to a Python run: ``def scan(ctx: RunContext) -> dict | None``."""

    def __init__(self, run: RunControl):
        self._run = run
        self.run_id: int = run.run_id
        self.job: str = run.job.name
        self.params: dict[str, Any] = dict(run.job.params)
        self.scheduled_at = datetime.fromtimestamp(run.scheduled_at, timezone.utc)
        self.deadline = datetime.fromtimestamp(run.deadline_at, timezone.utc)
        self.log = RunLog(run)
        self._step: StepRecord | None = None

    @property
    def findings(self) -> Findings:
        return self._run.findings

    @property
    def http(self) -> RunSession:
        """The run's requests.Session (timeouts capped to the deadline, broken off at abort)."""
        return self._run.http_session()

    def remaining(self) -> float:
        """Seconds left before the deadline (elapsed time: counts time asleep)."""
        return self._run.remaining()

    def checkpoint(self) -> None:
        """Raise RunTimeout / RunCancelled when the run is due to stop (RunAborted once it ended)."""
        self._run.checkpoint()

    def warn(self, message: str) -> None:
        """A finding: the current step (or, outside steps, the run) becomes a warning."""
        message = self._run.redactor.line(_text(message))
        if self._step is not None:
            self._step.status = WARNING
            self._step.error = message if not self._step.error else f"{self._step.error}; {message}"
        else:
            self.findings.warnings.append(message)
        self.log.warning("%s: %s", self._run.label, message)

    def _write(self, fn, *args) -> tuple[bool, Any]:
        """A step write: (False, None) when the database refused it (the record stays in
        memory and lands with the run's end); the run's abort when its end is recorded."""
        try:
            with store.patience(timing.RUN_WRITE_WAIT):
                return True, fn(*args)
        except WriteFailed:
            return False, None
        except RunEnded as e:
            self._run.ended_elsewhere(e.status)
            raise RunCancelled(f"its end was recorded elsewhere as {e.status}") from None

    @contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        """A step row. An ordinary exception inside is the step's error and is suppressed."""
        self.checkpoint()
        if self._step is not None:
            raise RuntimeError(f"step {name!r} started inside step {self._step.name!r}")
        record = StepRecord(self._run.redactor.line(_text(name), 200), started_at=clock.wall())
        self.findings.steps.append(record)
        _, record.row_id = self._write(
            store.start_step, self.run_id, record.name, record.started_at, self._run.instance_id
        )
        self._step = record
        try:
            yield record
        except RunAborted as abort:
            # Not suppressed: the step in flight ends with the run's status, and says what
            # it was waiting for (written with the run's end).
            waiting = self._run.waiting_for()
            record.status = abort.status
            record.error = self._run.redactor.line(
                abort.reason + (f" while waiting for {waiting}" if waiting else "")
            )
            record.finished_at = clock.wall()
            raise
        except Exception as e:
            # An exception caused by the abort (a socket shut down under a body read) is
            # the abort: the step in flight takes the run's status.
            self.checkpoint()
            record.status = ERROR
            line, trace = describe_exception(e)
            record.error = self._run.redactor.line(line)
            if not isinstance(e, StepFailed):
                self.findings.tracebacks.append(self._run.redactor(f"step {record.name!r}:\n{trace}"))
            self.log.info("%s: step %r failed: %s", self._run.label, record.name, record.error)
        finally:
            self._step = None
        if record.status == RUNNING:
            record.status = SUCCESS
        record.finished_at = clock.wall()
        if record.row_id is not None:
            record.written, _ = self._write(
                store.finish_step,
                self.run_id,
                record.row_id,
                record.status,
                record.error,
                record.finished_at,
                self._run.instance_id,
            )
        self.checkpoint()
