from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from beaconlite import store
from beaconlite.errors import RunEnded, SlotTaken, StoreError, Unreachable, WriteFailed
from beaconlite.store import database

ROOT = Path(__file__).resolve().parent.parent


def make_run(job="j", scheduled_at=100.0, attempt=1, now=100.0):
    return store.start_run(job, "schedule", scheduled_at, attempt, now + 60, None, now)


def test_schema_created_with_wal_and_version(tmp_db):
    assert store.db.execute_sql("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    assert store.db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute_sql("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert store.db.execute_sql("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert {"instance", "run", "step", "request", "job"} <= set(store.db.get_tables())


def test_file_modes(tmp_path):
    path = tmp_path / "private" / "b.db"
    store.open_writer(path)
    make_run()  # forces the WAL files into existence
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    for f in (path, path.with_name("b.db-wal"), path.with_name("b.db-shm")):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f


def test_group_access_modes(tmp_path):
    path = tmp_path / "shared" / "b.db"
    store.open_writer(path, group_access=True)
    make_run()
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o2770
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660


def test_existing_directory_mode_is_kept(tmp_path):
    directory = tmp_path / "mine"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    store.open_writer(directory / "b.db")
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755


def test_migration_from_an_older_version_keeps_data(tmp_path):
    path = tmp_path / "b.db"
    store.open_writer(path)
    store.close()
    # Rebuild it as a version-1 database: only the first migration's tables.
    conn = sqlite3.connect(path)
    conn.executescript("DROP TABLE request; DROP TABLE job; PRAGMA user_version = 1;")
    conn.execute(
        "INSERT INTO run (job, status, trigger, attempt, scheduled_at, finished_at) "
        "VALUES ('old', 'success', 'schedule', 1, 1.0, 2.0)"
    )
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="older than this beaconlite"):
        store.open_reader(path)  # a reader never migrates
    store.open_writer(path)
    assert store.db.execute_sql("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    assert [r.job for r, _, _ in store.list_runs()] == ["old"]
    assert store.job_states() == []


def indexes_of(path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(
            conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        )
    finally:
        conn.close()


def fresh(tmp_path):
    path = tmp_path / "fresh" / "b.db"
    store.open_writer(path)
    store.close()
    return path


def test_upgrade_of_a_database_made_by_the_previous_release(tmp_path):
    """tests/data/schema-v2.db was written by beaconlite 0.1.0 (schema 2): one success with
    a step, one run left running, one skipped row, a published job."""
    import json
    import shutil

    from beaconlite import render

    expected_indexes = indexes_of(fresh(tmp_path))
    path = tmp_path / "b.db"
    shutil.copy(ROOT / "tests" / "data" / "schema-v2.db", path)
    # Requests as 0.1.0 answered them: "" done, "queued" held, any other text refused;
    # and one not answered yet.
    conn = sqlite3.connect(path)
    for error in ("", "queued", "overlap: 1 run(s) live", None):
        conn.execute(
            "INSERT INTO request (kind, job, created_at, taken_at, error) "
            "VALUES ('trigger', 'orders', 1.0, ?, ?)",
            (None if error is None else 2.0, error),
        )
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="older than this beaconlite"):
        store.open_reader(path)
    store.open_writer(path)
    assert [r.answer for r in store.Request.select().order_by(store.Request.id)] == [
        "done", "queued", "refused", None
    ]  # fmt: skip
    assert store.db.execute_sql("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    assert indexes_of(path) == expected_indexes, "an upgrade ends with the indexes of a new database"
    found = {r.id: r for r, _, _ in store.list_runs()}
    assert [(r.status, r.slots, r.last_slot_at) for r in found.values()] == [
        ("skipped", 1, None),
        ("running", 1, None),
        ("success", 1, None),
    ]
    success = found[1]
    assert json.loads(success.summary) == {"tables": 1} and success.scheduled_at == 1790000000.0
    shaped = render.run_json(success, 1, 1)
    assert shaped["slots"] == 1 and shaped["last_slot_at"] == shaped["scheduled_at"]
    assert [s.name for s in store.get_run(1)[1]] == ["orders"]
    assert [j.name for j in store.job_states()] == ["orders"]
    # New rows use the new columns.
    skip = store.record_skipped(
        "orders", 1790000400.0, "missed", 1790000500.0, slots=3, last_slot_at=1790000520.0
    )
    assert (store.Run.get_by_id(skip).slots, store.Run.get_by_id(skip).last_slot_at) == (3, 1790000520.0)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "b.db"
    store.open_writer(path)
    store.db.execute_sql(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    store.close()
    for opener in (store.open_reader, store.open_writer):
        with pytest.raises(StoreError, match="newer than this beaconlite"):
            opener(path)


def test_missing_database_reads_as_empty_and_is_not_created(tmp_path):
    path = tmp_path / "nothing" / "b.db"
    assert store.open_reader(path) is False
    assert store.list_runs() == [] and store.daemon_state(0)[1] == "stopped"
    assert not path.exists() and not path.parent.exists()


@pytest.mark.parametrize("content", [b"not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 50])
def test_corrupt_database_is_a_store_error(tmp_path, content):
    path = tmp_path / "b.db"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=str(path)):
        store.open_reader(path)


def test_foreign_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(StoreError, match="not a beaconlite database"):
        store.open_reader(path)


def test_a_slot_starts_at_most_once(any_db):
    make_run(scheduled_at=5.0)
    with pytest.raises(SlotTaken):
        make_run(scheduled_at=5.0)
    make_run(scheduled_at=5.0, attempt=2)  # a retry keeps its slot
    assert store.record_skipped("j", 5.0, "dup", 6.0) is None


def test_finish_is_compare_and_set_and_ends_steps(any_db):
    run_id = make_run()
    done = store.start_step(run_id, "a", 101.0)
    store.finish_step(run_id, done, "success", None, 102.0)
    in_flight = store.start_step(run_id, "b", 102.0)
    assert store.finish_run(run_id, "timeout", 103.0, error="deadline") is True
    assert store.finish_run(run_id, "success", 104.0) is False  # a late finisher loses
    run, steps = store.get_run(run_id)
    assert (run.status, run.finished_at, run.error) == ("timeout", 103.0, "deadline")
    assert [(s.name, s.status) for s in steps] == [("a", "success"), ("b", "timeout")]
    with pytest.raises(RunEnded):  # a step of an ended run is refused, not written
        store.finish_step(run_id, in_flight, "success", None, 105.0)
    with pytest.raises(RunEnded):
        store.start_step(run_id, "c", 106.0)
    assert [(s.name, s.status) for s in store.get_run(run_id)[1]] == [("a", "success"), ("b", "timeout")]


def test_two_writers_one_wins(any_db):
    """Two threads (two connections) race to finish the same run: exactly one wins."""
    for trial in range(20):
        run_id = make_run(scheduled_at=float(trial))
        barrier = threading.Barrier(2)
        results = []

        def finish(status, run_id=run_id, barrier=barrier, results=results):
            barrier.wait()
            results.append((status, store.finish_run(run_id, status, 200.0)))
            store.db.close()

        threads = [threading.Thread(target=finish, args=(s,)) for s in ("success", "timeout")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [status for status, won in results if won]
        assert len(winners) == 1
        assert store.run_status(run_id) == winners[0]


def test_job_overview_ignores_skips_for_last_status(any_db):
    a = make_run(scheduled_at=1.0)
    store.finish_run(a, "error", 2.0, error="boom")
    store.record_skipped("j", 3.0, "overlap: 1 run live", 3.0)
    make_run(scheduled_at=4.0)  # live
    from beaconlite.config import Config, JobSpec

    config = Config(None, jobs=(JobSpec(name="j", run="m:f"), JobSpec(name="other", run="m:f")))
    info = {row["name"]: row for row in store.job_overview(config, running=False)}
    assert {
        k: info["j"][k] for k in ("last_status", "last_finished_at", "live_runs", "last_skip_reason")
    } == {
        "last_status": "error",
        "last_finished_at": 2.0,
        "live_runs": 1,
        "last_skip_reason": "overlap: 1 run live",
    }
    assert info["other"]["last_status"] is None
    store.pause_job("j", 5.0, "ann@host")
    info = {row["name"]: row for row in store.job_overview(config, running=False)}
    assert (info["j"]["paused"], info["j"]["paused_at"], info["j"]["paused_by"]) == (True, 5.0, "ann@host")
    assert info["other"]["paused"] is False


def plans_of(call) -> list[tuple[str, str]]:
    """(statement, query plan) of every statement ``call`` runs, as SQLite plans it."""
    import logging

    statements = []

    class Catch(logging.Handler):
        def emit(self, record):
            if isinstance(record.msg, tuple):
                statements.append(record.msg)

    logger, handler = logging.getLogger("peewee"), Catch()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        call()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    out = []
    for sql, params in statements:
        if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            plan = store.db.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
            out.append((sql, " | ".join(str(row[-1]) for row in plan)))
    return out


def test_every_hot_query_walks_an_index_not_the_history(tmp_db):
    """Each query of status, health, the metrics, the strips, `runs`, the ledger, the reaper
    and prune, as the store really sends it, is planned (without ANALYZE, as in use) as a
    search of an index; the only walks of the table are newest-first ones with a LIMIT that
    stop at once (most runs succeed) or at a bound on the id."""
    from beaconlite import reaper

    for i in range(30):
        run_id = make_run(job=f"j{i % 3}", scheduled_at=float(i))
        if i < 25:
            store.finish_run(run_id, ("success", "error", "timeout", "warning", "cancelled")[i % 5], 10.0 + i)
        store.record_skipped(f"j{i % 3}", 100.0 + i, "overlap", 20.0 + i)
    names = ["j0", "j1", "j2"]
    calls = {
        "job_facts": lambda: store.job_facts(names),
        "counts_since": lambda: store.counts_since(5.0),
        "runs": lambda: store.list_runs(limit=20),
        "runs --job": lambda: store.list_runs(job="j1", limit=20),
        "runs --status error": lambda: store.list_runs(status="error", limit=20),
        "runs --status running": lambda: store.list_runs(status="running", limit=20),
        "runs --since": lambda: store.list_runs(since=5.0, limit=20),
        "runs --job --since": lambda: store.list_runs(job="j1", since=5.0, limit=20),
        "runs --status --since": lambda: store.list_runs(status="timeout", since=5.0, limit=20),
        "strip": lambda: store.recent_runs("j1", 30),
        "last_started_slot": lambda: store.last_started_slot("j1"),
        "ledger_marks": lambda: store.ledger_marks(["j1", "j2"]),
        "previous_outcome": lambda: store.previous_outcome("j1", 20),
        "reaper": lambda: reaper.find_orphans(100.0, "h", daemon_lock_free=True),
        "prune --dry-run": lambda: store.prune(5.0, dry_run=True),
        "prune": lambda: store.prune(5.0),
        "get_run": lambda: store.get_run(3),
    }
    seen = 0
    for name, call in calls.items():
        for sql, plan in plans_of(call):
            if '"run"' not in sql:
                continue  # pauses, published jobs: a row per job at most
            seen += 1
            assert "TEMP B-TREE" not in plan, (name, sql, plan)  # no sort of a job's whole history
            for step in plan.split(" | "):
                if (
                    not step.startswith("SCAN")
                    or step in ("SCAN j", "SCAN latest")
                    or step.endswith("CONSTANT ROWS")
                ):
                    continue  # the job names given, and what was found for each
                small = "USING INDEX run_live" in step  # the live runs: a partial index
                early_exit = step in ("SCAN run", "SCAN t1") and '"id" DESC LIMIT' in sql
                assert small or early_exit, (name, sql, plan)
    assert seen > 20


def outside_connection(location):
    """A connection of another client to the same database."""
    if isinstance(location, Path):
        return sqlite3.connect(location)
    import psycopg

    return psycopg.connect(location.url, autocommit=True)


def test_a_batch_commits_once_and_a_refused_write_undoes_only_itself(any_db):
    outside = outside_connection(any_db)
    count = lambda: outside.execute("SELECT COUNT(*) FROM run").fetchone()[0]  # noqa: E731
    committed = []
    with store.batch():
        make_run(scheduled_at=1.0)
        with pytest.raises(SlotTaken):
            make_run(scheduled_at=1.0)
        with pytest.raises(ValueError), database.write():  # a bug of ours, half-way through a write
            make_run(scheduled_at=3.0)
            raise ValueError
        make_run(scheduled_at=2.0)
        store.on_commit(lambda: committed.append(count()))
        assert count() == 0 and committed == []  # nothing visible, nothing followed, before the commit
    assert committed == [2]
    assert [r.scheduled_at for r, _, _ in store.list_runs()] == [2.0, 1.0]
    outside.close()


def test_a_batch_that_fails_part_way_records_nothing_and_says_what_was_lost(tmp_db):
    """A full database half-way through a burst: none of its rows, no follow-ups, every
    written one reported lost with the database's words, later writes refused at once."""
    for i in range(20):
        make_run(scheduled_at=float(i))
    pages = store.db.execute_sql("PRAGMA page_count").fetchone()[0]
    store.db.execute_sql(f"PRAGMA max_page_count = {pages + 2}")
    lost, committed, refused = [], [], 0
    with pytest.raises(WriteFailed, match="full"), store.batch():
        for i in range(100, 2100):
            try:
                make_run(job="burst-" + "x" * 200, scheduled_at=float(i))
            except WriteFailed:
                refused += 1
                continue
            store.if_lost(lost.append)
            store.on_commit(lambda: committed.append(1))
    assert committed == [] and lost and all("full" in cause for cause in lost)
    assert refused == 2000 - len(lost)
    assert store.db.execute_sql("SELECT COUNT(*) FROM run").fetchone()[0] == 20
    store.db.execute_sql("PRAGMA max_page_count = 1073741823")
    make_run(scheduled_at=5000.0)  # the next write lands
    assert store.run_status(21) == "running"


def test_prune_deletes_finished_runs_and_steps_only(any_db):
    for i in range(25):
        run_id = make_run(scheduled_at=float(i))
        store.start_step(run_id, "s", float(i))
        store.finish_run(run_id, "success", float(i))
    live = make_run(scheduled_at=99.0, now=0.0)
    assert store.prune(before=10.0, dry_run=True) == 10
    assert store.prune(before=10.0) == 10
    assert len(store.list_runs(limit=100)) == 16
    assert store.run_status(live) == "running"
    orphan_steps = store.db.execute_sql(
        "SELECT COUNT(*) FROM step WHERE run_id NOT IN (SELECT id FROM run)"
    ).fetchone()[0]
    assert orphan_steps == 0


def test_prune_gives_the_space_back_to_the_file_system(tmp_db):
    """A new database keeps its free pages for incremental vacuum: a prune of most of the
    history, in several batches, leaves the file about as small as what is left in it."""
    store.db.execute_sql(
        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 30000) "
        "INSERT INTO run (job, status, trigger, attempt, scheduled_at, started_at, finished_at, error, "
        "slots) SELECT 'j', 'error', 'schedule', 1, i, i, i + 1, printf('%.200c', 'x'), 1 FROM k"
    )
    store.db.execute_sql(
        "INSERT INTO step (run_id, name, status, started_at) SELECT id, 's', 'success', 1.0 FROM run"
    )
    pages = lambda: store.db.execute_sql("PRAGMA page_count").fetchone()[0]  # noqa: E731
    full = pages()
    assert store.prune(before=29_002.0) == 29_000
    assert store.db.execute_sql("PRAGMA freelist_count").fetchone()[0] == 0
    assert pages() < full / 10, (full, pages())
    assert store.db.execute_sql("SELECT COUNT(*) FROM run").fetchone()[0] == 1000
    assert store.db.execute_sql("SELECT COUNT(*) FROM step").fetchone()[0] == 1000


def test_queries_never_write_a_database_restored_next_to_a_foreign_wal(tmp_path):
    """A database restored next to another database's stale -wal: every query command
    leaves the file byte for byte as it was (SPEC section 7), and says what it can."""
    import hashlib
    import subprocess
    import sys

    restored = tmp_path / "restored.db"
    store.open_writer(restored)
    for i in range(121):
        run_id = store.start_run("orders", "schedule", 1000.0 + i, 1, 2000.0 + i, None, 1000.0 + i)
        store.finish_run(run_id, "success", 1001.0 + i, summary=f'{{"n": {i}}}')
    store.close()  # a clean close: the WAL is checkpointed into the file and removed
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE junk (x TEXT)")
    conn.executemany("INSERT INTO junk VALUES (?)", [("z" * 500,)] * 400)
    conn.commit()
    foreign_wal = (tmp_path / "other.db-wal").read_bytes()
    conn.close()
    (tmp_path / "restored.db-wal").write_bytes(foreign_wal)
    before = hashlib.sha256(restored.read_bytes()).hexdigest()
    for args in (["status"], ["runs", "--json"], ["show", "1"], ["health", "--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "beaconlite", "--database", str(restored), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode in (0, 1, 2) and "Traceback" not in done.stderr, (args, done.stderr)
        assert hashlib.sha256(restored.read_bytes()).hexdigest() == before, args
    assert (tmp_path / "restored.db-wal").read_bytes() == foreign_wal


def test_upgrade_from_schema_7_adds_the_cluster_columns_and_keeps_the_rows(tmp_path):
    path = fresh(tmp_path)
    expected_indexes = indexes_of(path)
    conn = sqlite3.connect(path)
    conn.executescript(
        "DROP TABLE lease; ALTER TABLE instance DROP COLUMN lease_until; "
        "ALTER TABLE request DROP COLUMN node; ALTER TABLE request DROP COLUMN taken_by; "
        "PRAGMA user_version = 7;"
    )
    conn.execute("INSERT INTO request (kind, job, created_at) VALUES ('trigger', 'a', 1.0)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="older than this beaconlite"):
        store.open_reader(path)
    store.open_writer(path)
    assert store.db.execute_sql("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION == 8
    assert {"lease_until"} <= {c.name for c in store.db.get_columns("instance")}
    assert {"node", "taken_by"} <= {c.name for c in store.db.get_columns("request")}
    assert "lease" in store.db.get_tables()
    assert [(r.job, r.node) for r in store.take_requests(2.0)] == [("a", None)]
    assert indexes_of(path) == expected_indexes


def test_postgresql_migrates_once_and_refuses_a_newer_schema(pg_server, pg_url):
    from beaconlite.places import PostgresURL

    location = PostgresURL(pg_url)
    store.open_writer(location)
    store.open_writer(location)  # a second node: finds it current
    assert pg_server.sql(pg_url, "SELECT version FROM beaconlite_schema") == [(store.SCHEMA_VERSION,)]
    pg_server.sql(pg_url, "UPDATE beaconlite_schema SET version = version + 1")
    for opener in (store.open_reader, store.open_writer):
        with pytest.raises(StoreError, match="newer than this beaconlite"):
            opener(location)
    store.close()


def test_a_postgresql_url_never_shows_its_password(tmp_path):
    from beaconlite.config import load_config

    config = tmp_path / "c.toml"
    config.write_text('[daemon]\ndatabase = "postgresql://bob:${PW}@127.0.0.1:1/db"\n')
    loaded = load_config(config, env={"PW": "hunter2-secret"})
    assert str(loaded.daemon.database) == "postgresql://bob:***@127.0.0.1:1/db"
    assert "hunter2-secret" not in repr(loaded.daemon.database)
    assert "hunter2-secret" in loaded.secrets  # redacted from every log line and error too
    with pytest.raises(Unreachable) as refused:  # nothing listens on port 1: exit 1, to be retried
        store.open_writer(loaded.daemon.database)
    assert "hunter2-secret" not in str(refused.value) and "cannot connect" in str(refused.value)
