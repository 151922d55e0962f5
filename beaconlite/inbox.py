"""The requests the CLI leaves for the daemon in the database: taken on the tick, answered
in the same row (done, queued, or refused with the reason)."""

from __future__ import annotations

from collections.abc import Callable

from beaconlite import reaper, store
from beaconlite.errors import RunCancelled
from beaconlite.runner import Runner
from beaconlite.slots import Slots
from beaconlite.statuses import RUNNING


class Inbox:
    def __init__(self, slots: Slots, runner: Runner, host: str, reload: Callable[[int], None]):
        self.slots = slots
        self.runner = runner
        self.host = host
        self.reload = reload  # a reload request is answered once the reload is read

    def take(self, now: float, own: reaper.Own) -> None:
        """Answer every open request."""
        for request in store.take_requests(now, self.runner.instance_id):
            if request.kind == "trigger":
                job = self.slots.config.job(request.job)
                if job is None:
                    store.answer_request(request.id, refused=f"no job named {request.job!r}")
                    continue
                outcome = self.slots.trigger(job, request.created_at)
                store.answer_request(
                    request.id, outcome.run_id, queued=outcome.queued, refused=outcome.reason
                )
            elif request.kind == "reload":
                self.reload(request.id)
            elif request.kind == "cancel":
                store.answer_request(
                    request.id, request.run_id, refused=self.cancel(request.run_id, now, own)
                )

    def cancel(self, run_id: int, now: float, own: reaper.Own) -> str | None:
        """A cancel request: None when done, else why not."""
        if self.runner.abort(run_id, RunCancelled, "cancelled on request"):
            return None
        status = store.run_status(run_id)
        if status is None:
            return f"no run with id {run_id}"
        if status != RUNNING:
            return f"run {run_id} is not live (it is {status})"
        if any(r.run_id == run_id for r in self.runner.pending_ends()):
            return f"run {run_id} has ended; its end is not written yet"
        if self.runner.get(run_id) is not None:
            return None  # live here, its abort already under way
        if reaper.cancel_orphan(run_id, now, self.host, daemon_lock_free=True, own=own):
            return None
        return f"run {run_id} belongs to a live foreground `beaconlite run`: interrupt that process"
