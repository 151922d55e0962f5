"""The run store: SQLite through peewee (the only peewee importer), every query by name.

Times are float seconds since the epoch (UTC). Every transition out of "running" is a
compare-and-set (``WHERE status = 'running'``) whose row count says who won. Only the
process holding the daemon lock creates or migrates the schema; readers never do. Kept to
what peewee's query builder expresses: this is the piece that moves to PostgreSQL.

- ``database``: the handle, how a write happens (bounded waiting), the outage record;
- ``schema``: models, schema version and migrations, opening the file;
- ``runs``: writing the ledger (instances, runs, steps, requests, pruning);
- ``history``: reading it (history, overview, daemon state, counts).
"""

from beaconlite.store.database import close, db, outage, patience
from beaconlite.store.history import (
    counts_since,
    daemon_state,
    get_run,
    instances,
    job_overview,
    job_states,
    known_jobs,
    last_start,
    latest_daemon,
    list_runs,
    previous_outcome,
)
from beaconlite.store.runs import (
    add_request,
    answer_request,
    finish_abandoned,
    finish_abandoned_many,
    finish_run,
    finish_step,
    get_request,
    heartbeat,
    last_started_slot,
    ledger_mark,
    live_runs,
    prune,
    record_skipped,
    register_instance,
    run_status,
    save_job_states,
    set_leaked_threads,
    start_run,
    start_step,
    stop_instance,
    take_requests,
    withdraw_request,
)
from beaconlite.store.schema import (
    SCHEMA_VERSION,
    Instance,
    JobState,
    Request,
    Run,
    Step,
    ensure_directory,
    file_mode,
    open_attached,
    open_for_changes,
    open_reader,
    open_writer,
    tighten_modes,
)

__all__ = [
    "SCHEMA_VERSION",
    "Instance",
    "JobState",
    "Request",
    "Run",
    "Step",
    "add_request",
    "answer_request",
    "close",
    "counts_since",
    "daemon_state",
    "db",
    "ensure_directory",
    "file_mode",
    "finish_abandoned",
    "finish_abandoned_many",
    "finish_run",
    "finish_step",
    "get_request",
    "get_run",
    "heartbeat",
    "instances",
    "job_overview",
    "job_states",
    "known_jobs",
    "last_start",
    "last_started_slot",
    "latest_daemon",
    "ledger_mark",
    "list_runs",
    "live_runs",
    "open_attached",
    "open_for_changes",
    "open_reader",
    "open_writer",
    "outage",
    "patience",
    "previous_outcome",
    "prune",
    "record_skipped",
    "register_instance",
    "run_status",
    "save_job_states",
    "set_leaked_threads",
    "start_run",
    "start_step",
    "stop_instance",
    "take_requests",
    "tighten_modes",
    "withdraw_request",
]
