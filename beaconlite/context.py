"""RunContext: what a Python integrity run sees (steps, checkpoints, warnings, HTTP)."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from beaconlite import clock, store
from beaconlite.errors import RunAborted, StepFailed
from beaconlite.redaction import one_line

if TYPE_CHECKING:
    from beaconlite.http import RunSession
    from beaconlite.runner import LiveRun


@dataclass
class StepRecord:
    name: str
    status: str
    error: str | None = None


@dataclass
class Findings:
    """What a run found, kept in memory for the verdict (the rows mirror it)."""

    steps: list[StepRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # ctx.warn() outside any step
    tracebacks: list[str] = field(default_factory=list)


class RunContext:
    """Handed to a Python run: ``def scan(ctx: RunContext) -> dict | None``."""

    def __init__(self, live: LiveRun):
        self._live = live
        self.run_id: int = live.run_id
        self.job: str = live.job.name
        self.params: dict[str, Any] = dict(live.job.params)
        self.scheduled_at = datetime.fromtimestamp(live.scheduled_at, timezone.utc)
        self.deadline = datetime.fromtimestamp(live.deadline_at, timezone.utc)
        self.log = logging.LoggerAdapter(
            logging.getLogger("beaconlite.run"), {"run_id": live.run_id, "job": live.job.name}
        )
        self.findings = Findings()
        self._step: StepRecord | None = None

    @property
    def http(self) -> RunSession:
        """The run's requests.Session (timeouts capped to the deadline, broken off at abort)."""
        return self._live.http_session()

    def remaining(self) -> float:
        """Seconds left before the deadline (elapsed time: counts time asleep)."""
        return self._live.deadline_elapsed - clock.elapsed()

    def checkpoint(self) -> None:
        """Raise RunTimeout / RunCancelled when the run is due to stop."""
        self._live.checkpoint()

    def warn(self, message: str) -> None:
        """A finding: the current step (or, outside steps, the run) becomes a warning."""
        message = self._live.redact(one_line(message))
        if self._step is not None:
            self._step.status = "warning"
            self._step.error = message if not self._step.error else f"{self._step.error}; {message}"
        else:
            self.findings.warnings.append(message)
        self.log.warning("%s", message)

    @contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        """A step row. An ordinary exception inside is the step's error and is suppressed."""
        self.checkpoint()
        if self._step is not None:
            raise RuntimeError(f"step {name!r} started inside step {self._step.name!r}")
        record = StepRecord(str(name), "success")
        step_id = store.start_step(self.run_id, record.name, clock.wall())
        self.findings.steps.append(record)
        self._step = record
        try:
            yield record
        except RunAborted:
            # Not suppressed; the run's compare-and-set ends this step with the run's status.
            record.status = "aborted"
            raise
        except Exception as e:
            # An exception caused by the abort (a socket shut down under a body read) is
            # the abort: the step in flight takes the run's status.
            if self._live.aborted is not None:
                record.status = "aborted"
                raise type(self._live.aborted)(self._live.aborted.reason) from e
            record.status = "error"
            if isinstance(e, StepFailed):
                record.error = self._live.redact(one_line(str(e)))
            else:
                record.error = self._live.redact(one_line(f"{type(e).__name__}: {e}"))
                self.findings.tracebacks.append(
                    self._live.redact(f"step {record.name!r}:\n{traceback.format_exc()}")
                )
            self.log.info("step %r failed: %s", record.name, record.error)
        finally:
            self._step = None
        store.finish_step(step_id, record.status, record.error, clock.wall())
        self.checkpoint()
