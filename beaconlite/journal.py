"""What a stop could not write, kept beside the database for the next start.

When the daemon stops while the database refuses writes, the true ends of its runs (and the
skipped rows of dropped retries and queued fires) go into ``DATABASE.unrecorded`` (JSON, one
entry per line, private mode). The next daemon replays it under the lock, before the reaper
looks: so a run that succeeded is recorded ``success``, not ``timeout``. If even the journal
cannot be written, the reaper records those runs as orphans at the next start.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from beaconlite import store
from beaconlite.errors import WriteFailed
from beaconlite.lock import create_private_file

log = logging.getLogger(__name__)


def journal_path(database: Path) -> Path:
    return database.with_name(database.name + ".unrecorded")


def end_entry(run_id: int, verdict) -> dict:
    return {"kind": "end", "run_id": run_id, **verdict.__dict__}


def skip_entry(job: str, slot: float, reason: str, now: float, trigger: str, attempt: int) -> dict:
    return {"kind": "skip", "job": job, "scheduled_at": slot, "reason": reason, "finished_at": now,
            "trigger": trigger, "attempt": attempt}  # fmt: skip


def write(database: Path, entries: list[dict], mode: int) -> bool:
    """Append entries; False when they could not be written (the reaper will act)."""
    path = journal_path(database)
    try:
        create_private_file(path, mode)
        with open(path, "a", encoding="utf-8") as f:
            for entry in entries:
                f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return True
    except OSError as e:
        log.error("cannot write %s: %s; the reaper will record those runs at the next start", path, e)
        return False


def replay(database: Path) -> int:
    """Record what a previous stop could not (compare-and-set: nothing is overwritten)."""
    path = journal_path(database)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return 0
    done = 0
    try:
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by the crash that followed: the reaper has it
            if entry.get("kind") == "end":
                done += store.finish_run(
                    entry["run_id"],
                    entry["status"],
                    entry["finished_at"],
                    error=entry["error"],
                    summary=entry["summary"],
                    output=entry["output"],
                    duration_s=entry["duration_s"],
                    suspended_s=entry["suspended_s"],
                    steps=entry["steps"],
                )
            elif entry.get("kind") == "skip":
                run_id = store.record_skipped(
                    entry["job"],
                    entry["scheduled_at"],
                    entry["reason"],
                    entry["finished_at"],
                    entry["trigger"],
                    entry["attempt"],
                )
                done += run_id is not None
    except WriteFailed as e:
        log.error("cannot replay %s yet: %s", path, e)
        return done
    path.unlink()
    if done:
        log.info(
            "recorded %d end(s) a previous stop could not write", done, extra={"event": "journal.replay"}
        )
    return done
