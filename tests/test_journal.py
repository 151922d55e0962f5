"""What a stop could not write, replayed by the next start (real files, real store)."""

from __future__ import annotations

import os
import stat
import time

from beaconlite import journal, store
from beaconlite.verdict import Verdict


def test_a_journal_round_trip_records_the_true_ends_once(tmp_db):
    now = time.time()
    run_id = store.start_run("j", "schedule", now, 1, now + 60, None, now)
    verdict = Verdict("success", None, '{"n": 1}', "out", now + 1, 1.0, None, [])
    entries = [
        journal.end_entry(run_id, verdict),
        journal.skip_entry(
            "j", now + 60, "queued fire dropped: the daemon is stopping", now + 2, "schedule", 1
        ),
    ]
    assert journal.write(tmp_db, entries, 0o600)
    path = journal.journal_path(tmp_db)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path, "a") as f:
        f.write('{"kind": "end", "run_id": 12')  # a line cut short by a crash: ignored
    assert journal.replay(tmp_db) == 2
    assert not path.exists()
    run, _ = store.get_run(run_id)
    assert (run.status, run.summary, run.output) == ("success", '{"n": 1}', "out")
    assert [r.status for r, _, _ in store.list_runs(job="j")] == ["skipped", "success"]
    assert journal.replay(tmp_db) == 0  # nothing left


def test_replay_never_overwrites_an_end_already_recorded(tmp_db):
    now = time.time()
    run_id = store.start_run("j", "schedule", now, 1, now + 60, None, now)
    store.finish_abandoned(run_id, "timeout", "orphaned: test", now + 5)
    verdict = Verdict("success", None, None, None, now + 1, 1.0, None, [])
    journal.write(tmp_db, [journal.end_entry(run_id, verdict)], 0o600)
    assert journal.replay(tmp_db) == 0
    assert store.get_run(run_id)[0].status == "timeout"
