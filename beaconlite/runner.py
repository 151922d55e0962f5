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
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from beaconlite import clock, kinds, store, timing
from beaconlite.capture import Capture
from beaconlite.config import Config, JobSpec
from beaconlite.context import RunContext
from beaconlite.durations import format_duration
from beaconlite.errors import RunAborted, RunCancelled, WriteFailed
from beaconlite.liverun import CannotStart, LiveRun, deadline_scope
from beaconlite.loader import Code
from beaconlite.redaction import one_line
from beaconlite.statuses import ERROR
from beaconlite.verdict import Verdict, decide

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunEnd:
    """A run's recorded end, as the daemon's follow-ups (retries, notifications) see it."""

    run_id: int
    job: str
    attempt: int
    scheduled_at: float
    status: str


class Runner:
    """Starts runs and keeps the live ones; the daemon and `beaconlite run` both use it.

    ``gate``: a lock the scheduler holds while it records a batch of due runs; each run
    waits on it before doing any work (the daemon's; a foreground run has none).
    """

    def __init__(
        self,
        config: Config,
        code: Code,
        instance_id: int | None,
        on_end: Callable[[RunEnd], None] | None = None,
        gate: threading.Lock | None = None,
    ):
        self.config = config
        self.code = code  # the job code, as loaded for this config (a reload replaces both)
        self.instance_id = instance_id
        self.on_end = on_end
        self.gate = gate
        self._lock = threading.Lock()
        self._live: dict[int, LiveRun] = {}  # working, or aborted and on its way out
        self._pending: dict[int, LiveRun] = {}  # ended, but the database refused the record
        self._leaked: list[LiveRun] = []

    def start(
        self, job: JobSpec, trigger: str, scheduled_at: float, attempt: int = 1, honour_pause: bool = False
    ) -> LiveRun:
        """Record the run (SlotTaken if its slot already ran; WriteFailed if the database
        refused; Paused if ``honour_pause`` and the job is paused), then start its thread.
        A thread that cannot start ends the run at once."""
        now = clock.wall()
        run_id = store.start_run(
            job.name, trigger, scheduled_at, attempt, now + job.timeout, self.instance_id, now, honour_pause
        )
        target = self.code.targets.get(job.run) if job.kind == "python" else None
        live = LiveRun(
            self.config, run_id, job, trigger, scheduled_at, attempt, now, target, self.give_up, self.disown
        )
        with self._lock:
            self._live[run_id] = live
        live.say(logging.INFO, "run.start", "started (%s)", trigger)
        try:
            live.thread = threading.Thread(
                target=self._run, args=(live,), daemon=True, name=f"run-{run_id}-{job.name}"
            )
            live.thread.start()
        except RuntimeError as e:
            live.thread = None
            self.end(live, self._failed(live, f"cannot start a thread: {e}"))
        return live

    def live_runs(self) -> list[LiveRun]:
        """Runs whose end is not decided yet (pending ends are not live)."""
        with self._lock:
            return list(self._live.values())

    def pending_ends(self) -> list[LiveRun]:
        with self._lock:
            return list(self._pending.values())

    def get(self, run_id: int) -> LiveRun | None:
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

    def _run(self, live: LiveRun) -> None:
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

    def _work(self, live: LiveRun) -> tuple[Any, BaseException | None]:
        ctx = RunContext(live)
        try:
            with Capture(live.captured):  # print() and logging of this thread are the run's
                return kinds.execute(live, ctx), None
        except BaseException as e:  # the job's own code: anything at all becomes data
            return None, e

    def _decide(self, live: LiveRun, summary: Any, failure: BaseException | None) -> Verdict:
        live.finish_work()
        output = live.output
        if live.job.kind == "python":  # what it wrote, redacted whole before anything is cut
            output = live.redactor(live.captured.text(), cut_before=live.captured.dropped)
        status, error, summary_text, output = decide(
            live.job, live.aborted, failure, summary, live.findings, output, live.redactor
        )
        return self._verdict(live, status, error, summary_text, output)

    def _failed(self, live: LiveRun, error: str) -> Verdict:
        return self._verdict(live, ERROR, error, None, None)

    def _verdict(self, live: LiveRun, status: str, error, summary, output) -> Verdict:
        elapsed = clock.elapsed() - live.started_elapsed
        suspended = elapsed - (clock.monotonic() - live.started_monotonic)
        return Verdict(
            status=status,
            error=live.redactor.line(error) if error else None,
            summary=summary,  # redacted in decide(), string by string
            output=output,  # redacted before it was cut (keep_output, decide)
            finished_at=clock.wall(),
            duration_s=round(elapsed, 6),
            suspended_s=round(suspended, 3) if suspended > 0.5 else None,
            steps=[s.as_row() for s in live.findings.steps if not s.written],
        )

    # -- the one owner of a run's end -----------------------------------------------------

    def end(self, live: LiveRun, verdict: Verdict) -> None:
        """Decide the run's end (once: a later finisher changes nothing) and record it."""
        with live._lock:
            first = live.verdict is None
            if first:
                live.verdict = verdict
                live.work_done = True
        if not first:
            with self._lock:  # a leaked thread that finally ended no longer counts
                self._leaked = [r for r in self._leaked if r is not live]
            live.say(
                logging.INFO, "run.late", "its thread ended after the run was recorded as %s; keeping that",
                live.verdict.status,
            )  # fmt: skip
            return
        live.cancel_timers()
        with self._lock:
            self._live.pop(live.run_id, None)
            self._pending[live.run_id] = live
        self._record(live)

    def _record(self, live: LiveRun) -> bool:
        """Write a decided end; False (kept pending) when the database refuses it.

        The run's own thread and the tick (retrying pending ends) may both get here: one
        records, the other finds it done. Its follow-ups (a retry, notifications) run once.
        """
        with live.recording:
            if live.ended.is_set():
                return True
            return self._record_once(live)

    def _record_once(self, live: LiveRun) -> bool:
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
            duration = round(verdict.duration_s or 0.0, 3)
            error = f": {one_line(verdict.error, 200)}" if verdict.error else ""
            live.say(logging.INFO, "run.finish", "%s in %.3fs%s", status, duration, error,
                     status=status, duration_s=duration)  # fmt: skip
        else:
            live.say(
                logging.INFO, "run.late", "ended as %s, but it was already recorded as %s; keeping that",
                verdict.status, status,
            )  # fmt: skip
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

    def give_up(self, live: LiveRun) -> None:
        """abort_grace after an abort, the run still has not ended: record it ourselves."""
        aborted = live.aborted
        if live.verdict is not None or aborted is None:
            return
        thread = live.thread
        frame = sys._current_frames().get(thread.ident) if thread is not None else None
        frames = traceback.extract_stack(frame)[-6:] if frame else []  # innermost first
        stack = " <- ".join(f"{f.filename}:{f.lineno} in {f.name}" for f in reversed(frames))
        grace = format_duration(live.give_up_after())
        live.say(
            logging.ERROR, "run.leaked",
            "did not end %s after its abort (%s); recording it as %s, thread leaked; stuck at: %s",
            grace, aborted.reason, aborted.status, stack or "?", status=aborted.status,
        )  # fmt: skip
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
