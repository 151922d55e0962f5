"""[[notify]]: POST a finished run's JSON to a URL, or pipe it to a command.

Sent from one worker thread with its own timeouts and a few retries with backoff, so a
failing or hanging hook never delays a run or the scheduler. Payloads come from the stored
run (already redacted) and are redacted again with the config's secrets.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import queue
import subprocess
import threading
import time

from beaconlite import render, statuses, store, timing
from beaconlite.config import Config, NotifySpec
from beaconlite.redaction import Redactor

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1000


def wanted(spec: NotifySpec, job: str, event: str) -> bool:
    return event in spec.on and any(fnmatch.fnmatchcase(job, p) for p in spec.jobs)


def events_for(job: str, run_id: int, status: str) -> list[str]:
    """The run's status, plus "recovered" for a first success after an error or timeout."""
    events = [status]
    if status in statuses.OK and store.previous_outcome(job, run_id) in statuses.FAILURES:
        events.append(statuses.RECOVERED)
    return events


class Notifier:
    """One worker thread and queue per [[notify]] target: a hook that hangs delays only its
    own notifications, never a run, the scheduler, or the other hooks."""

    def __init__(self, config: Config):
        self.config = config
        self._lock = threading.Lock()
        self._queues: dict[NotifySpec, queue.Queue] = {}

    def run_ended(self, job: str, run_id: int, status: str, attempts: int = 1) -> None:
        """Queue the notifications this outcome calls for (called on the run's own thread).
        An outcome, not an attempt: a run that will be retried is never reported here; the
        last attempt is, once, with how many attempts it took."""
        specs = self.config.notify
        if not specs:
            return
        for event in events_for(job, run_id, status):
            for spec in specs:
                if wanted(spec, job, event):
                    try:
                        self._queue_for(spec).put_nowait((run_id, event, attempts))
                    except queue.Full:
                        log.error(
                            "notification queue full: dropped %s of run %d",
                            event,
                            run_id,
                            extra={"event": "notify.dropped", "job": job, "run_id": run_id},
                        )

    def _queue_for(self, spec: NotifySpec) -> queue.Queue:
        with self._lock:
            if spec not in self._queues:
                self._queues[spec] = queue.Queue(QUEUE_LIMIT)
                threading.Thread(
                    target=self._work, args=(spec, self._queues[spec]), name="notify", daemon=True
                ).start()
            return self._queues[spec]

    def _work(self, spec: NotifySpec, jobs: queue.Queue) -> None:
        while True:
            run_id, event, attempts = jobs.get()
            try:
                self._deliver(spec, run_id, event, attempts)
            except Exception:  # a loop boundary: one bad delivery must not stop the next
                log.exception("notification of run %d failed", run_id)

    def _deliver(self, spec: NotifySpec, run_id: int, event: str, attempts: int) -> None:
        found = store.get_run(run_id)
        if found is None:
            return
        redact = Redactor(self.config.secrets)
        payload = redact.tree({**render.run_detail_json(*found), "event": event, "attempts": attempts})
        body = json.dumps(payload).encode()
        target = spec.url or " ".join(spec.command)
        delay = timing.NOTIFY_BACKOFF
        for attempt in range(1, timing.NOTIFY_ATTEMPTS + 1):
            error = self._send(spec, body)
            if error is None:
                log.info(
                    "notified %s of run %d (%s)",
                    redact(target),
                    run_id,
                    event,
                    extra={
                        "event": "notify.sent",
                        "job": payload["job"],
                        "run_id": run_id,
                        "status": payload["status"],
                    },
                )
                return
            if attempt < timing.NOTIFY_ATTEMPTS:
                time.sleep(delay)
                delay *= 2
        log.warning(
            "could not notify %s of run %d (%s) after %d attempts: %s",
            redact(target),
            run_id,
            event,
            timing.NOTIFY_ATTEMPTS,
            redact(error),
            extra={"event": "notify.failed", "job": payload["job"], "run_id": run_id},
        )

    @staticmethod
    def _send(spec: NotifySpec, body: bytes) -> str | None:
        """One attempt; None on success, else what went wrong."""
        if spec.url:
            import requests

            try:
                resp = requests.post(
                    spec.url,
                    data=body,
                    timeout=timing.NOTIFY_HTTP_TIMEOUT,
                    headers={"Content-Type": "application/json"},
                )
            except requests.RequestException as e:
                return f"{type(e).__name__}: {e}"
            return None if resp.ok else f"HTTP {resp.status_code}"
        try:
            done = subprocess.run(
                list(spec.command), input=body, capture_output=True, timeout=timing.NOTIFY_COMMAND_TIMEOUT
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return str(e)
        return None if done.returncode == 0 else f"exit code {done.returncode}"
