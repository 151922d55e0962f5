"""One run, start to terminal status: the row first, then the work, then the verdict.

Each run has its own daemon thread and a deadline alarm (``alarms``: one thread for all). The abort (deadline,
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
from contextlib import contextmanager
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
    """Starts runs and keeps the live ones; the daemon and `beaconlite run` both use it."""

    def __init__(
        self,
        config: Config,
        code: Code,
        instance_id: int | None,
        on_end: Callable[[RunEnd], None] | None = None,
    ):
        self.config = config
        self.code = code  # the job code, as loaded for this config (a reload replaces both)
        self.instance_id = instance_id
        self.on_end = on_end
        self._lock = threading.Lock()
        self._live: dict[int, LiveRun] = {}  # working, or aborted and on its way out
        self._pending: dict[int, LiveRun] = {}  # ended, but the database refused the record
        self._leaked: list[LiveRun] = []
        # Live runs not aborting, by job, and their number: what a fire's decision counts,
        # kept as runs start and stop working (a burst must not walk every live run per fire).
        self._working: dict[str, dict[int, LiveRun]] = {}
        self._working_total = 0
        self._together = threading.local()  # starting_together()'s runs, on its thread
        self._ends_writer = False  # a thread is writing ends (record_pending)
        self._ends_wanted = False  # an end was decided since the writer last looked

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
            self.config, run_id, job, trigger, scheduled_at, attempt, now, target,
            self.give_up, self.disown, self._not_working,
        )  # fmt: skip
        live.instance_id = self.instance_id
        with self._lock:
            self._live[run_id] = live
            self._working.setdefault(job.name, {})[run_id] = live
            self._working_total += 1
        # In a batch (a burst of fires), the work starts once the row is committed; a lost
        # batch means the row never existed: the run is forgotten, its slot accounted later.
        store.if_lost(lambda cause: self._forget(live))
        store.on_commit(lambda: self._begin_soon(live))
        return live

    @contextmanager
    def starting_together(self):
        """Runs this thread starts in the block begin their work at its end: a burst's
        rows are all written before the first of its threads is started."""
        self._together.runs = []
        try:
            yield
        finally:
            runs, self._together.runs = self._together.runs, None
            for live in runs:
                self._begin_work(live)

    def _begin_soon(self, live: LiveRun) -> None:
        together = getattr(self._together, "runs", None)
        if together is None:
            self._begin_work(live)
        else:
            together.append(live)

    def _begin_work(self, live: LiveRun) -> None:
        live.say(logging.INFO, "run.start", "started (%s)", live.trigger)
        try:
            live.thread = threading.Thread(
                target=self._run, args=(live,), daemon=True, name=f"run-{live.run_id}-{live.job.name}"
            )
            live.thread.start()
        except RuntimeError as e:
            live.thread = None
            self.end(live, self._failed(live, f"cannot start a thread: {e}"))

    def _forget(self, live: LiveRun) -> None:
        self._not_working(live)
        with self._lock:
            self._live.pop(live.run_id, None)

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
        with self._lock:
            return sorted(self._working.get(job, ())), self._working_total

    def _not_working(self, live: LiveRun) -> None:
        """The run is aborting or has ended: it no longer counts in ``occupancy``."""
        with self._lock:
            runs = self._working.get(live.job.name)
            if runs is not None and runs.pop(live.run_id, None) is not None:
                self._working_total -= 1
                if not runs:
                    del self._working[live.job.name]

    def abort(self, run_id: int, kind: type[RunAborted], reason: str) -> bool:
        """Abort a live run of this process; False when it is not (or no longer) live."""
        live = self.get(run_id)
        return live is not None and live.abort(kind, reason)

    def leaked_threads(self) -> int:
        with self._lock:
            self._leaked = [r for r in self._leaked if r.thread is not None and r.thread.is_alive()]
            return len(self._leaked)

    def watch(self) -> None:
        """The tick's look at live runs: abort the overdue (the alarm misses time asleep) and
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
        self._not_working(live)
        with self._lock:
            self._live.pop(live.run_id, None)
            self._pending[live.run_id] = live
        self.record_pending()  # this end, and any others decided meanwhile

    def forget_pending_ends(self) -> None:
        """This node was fenced: the ends it has not written are no longer its to write
        (its peers record those runs as orphans)."""
        with self._lock:
            for live in self._pending.values():
                live.disowned = live.disowned or "fenced"
        self.record_pending()

    def record_pending(self) -> int:
        """Write every decided end not recorded yet; how many are left.

        One thread at a time writes ends, many in one transaction (a burst of 10,000 runs
        ending at once must not queue 10,000 transactions on the write lock, each waiting
        for the interpreter). A thread that finds another writing leaves its end to it:
        the writer looks again before it stops. A refused batch stays pending for the tick.
        Each end's follow-ups (a retry, notifications) run once, after its commit.
        """
        with self._lock:
            self._ends_wanted = True
            if self._ends_writer:
                return len(self._pending)
            self._ends_writer = True
        refused = False
        try:
            while True:
                with self._lock:
                    if refused or not self._ends_wanted:
                        self._ends_writer = False
                        return len(self._pending)
                    self._ends_wanted = False
                    ends = sorted(self._pending.values(), key=lambda r: r.run_id)
                refused = not self._write_ends(ends)
        except BaseException:
            with self._lock:  # never leave the ends without a writer
                self._ends_writer = False
            raise

    def _write_ends(self, ends: list[LiveRun]) -> bool:
        for i in range(0, len(ends), timing.ENDS_PER_TRANSACTION):
            try:
                with store.patience(timing.RUN_WRITE_WAIT), store.batch():
                    for live in ends[i : i + timing.ENDS_PER_TRANSACTION]:
                        self._write_end(live)
            except WriteFailed:
                return False  # pending: the tick tries again (the outage is logged once)
            except Exception:  # beaconlite's own failure: the ends stay pending, not lost
                log.exception("writing %d run end(s) failed", len(ends[i : i + timing.ENDS_PER_TRANSACTION]))
                return False
        return True

    def _write_end(self, live: LiveRun) -> None:
        verdict = live.verdict
        if live.disowned is not None:
            won, status = False, live.disowned
        else:
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
                instance_id=live.instance_id,
            )
            status = verdict.status if won else (store.run_status(live.run_id) or verdict.status)
        store.on_commit(lambda: self._recorded(live, won, status))

    def _recorded(self, live: LiveRun, won: bool, status: str) -> None:
        """The end is in the database: say so, then its follow-ups."""
        verdict = live.verdict
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
