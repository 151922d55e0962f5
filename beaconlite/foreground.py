"""`beaconlite run JOB`: one run in this process, recorded like any other.

The process registers as its own instance (kind "foreground") and heartbeats while the run
lives, so a reaper can tell a live foreground run from one whose process died.
"""

from __future__ import annotations

import os
import signal
import socket
import threading

from beaconlite import __version__, clock, loader, store, timing
from beaconlite.config import Config, JobSpec
from beaconlite.errors import RunCancelled, WriteFailed
from beaconlite.lock import DaemonLock
from beaconlite.places import is_postgres, prepare_database_directory
from beaconlite.runner import Runner


def open_store(config: Config) -> None:
    """Open the database for writing runs: create or migrate it only under the daemon lock."""
    path = config.daemon.database
    if is_postgres(path):  # any node may migrate, under the database's own lock
        store.open_writer(path, max_connections=config.daemon.max_connections)
        return
    prepare_database_directory(config)
    lock = DaemonLock(path, store.file_mode(config.daemon.group_access))
    if not lock.try_acquire():
        store.open_attached(path)  # a daemon holds the lock: it has prepared the database
        return
    try:
        store.open_writer(path, config.daemon.group_access)
    finally:
        lock.release()


def run_in_foreground(config: Config, job: JobSpec) -> tuple[int, str]:
    """Run ``job`` now, here; return (run id, final status). Ctrl-C / SIGTERM cancel it."""
    code = loader.load_bounded(config, only=job.name)  # ConfigError: it cannot be imported
    open_store(config)
    instance = store.register_instance(
        "foreground", os.getpid(), socket.gethostname(), __version__, config.daemon.orphan_after, clock.wall()
    )
    runner = Runner(config, code, instance)
    stop_beats = threading.Event()
    live = runner.start(job, "manual", clock.wall())

    def beat():
        while not stop_beats.wait(config.daemon.heartbeat_interval):
            try:
                with store.patience(timing.TICK_WRITE_WAIT):
                    for run_id in store.heartbeat(instance, [live.run_id], clock.wall()):
                        runner.disown(run_id, store.run_status(run_id))
                    runner.record_pending()
            except store.nodes.Fenced:  # our lease passed (frozen, cut off): peers reap the run
                runner.disown(live.run_id, "fenced")
            except WriteFailed:
                pass  # logged once by the store; the run goes on
        store.close()

    threading.Thread(target=beat, name="heartbeat", daemon=True).start()
    # Ctrl-C and SIGTERM cancel the run (also when started with SIGINT ignored, as `&` does).
    previous = {
        sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while live.verdict is None:
            live.ended.wait(0.2)
    except KeyboardInterrupt:
        live.abort(RunCancelled, "cancelled by the user (interrupt)")
        while live.verdict is None:  # bounded: the runner records it itself after abort_grace
            runner.watch()
            live.ended.wait(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # The end is decided; the database may still refuse it for a while.
    until = clock.monotonic() + timing.STOP_WRITE_WAIT
    while not live.ended.is_set() and clock.monotonic() < until:
        with store.patience(1.0):
            runner.record_pending()
        live.ended.wait(0.2)
    stop_beats.set()
    try:
        with store.patience(timing.TICK_WRITE_WAIT):
            store.stop_instance(instance, clock.wall())
    except WriteFailed:
        pass
    if not live.ended.is_set():
        raise WriteFailed(
            f"run {live.run_id} ended {live.verdict.status}, but the database refused to record it "
            f"({store.outage.cause}); the reaper will record it as an orphan"
        )
    return live.run_id, store.run_status(live.run_id) or live.verdict.status
