"""The daemon's lifecycle: lock, recover, schedule, tick, signals, stop.

The tick (every second, or faster when heartbeats or the watchdog ask for it) is where the
daemon notices everything APScheduler cannot: CLI requests, runs overdue by elapsed time,
a suspend or a freeze, heartbeats, the reaper, retries, and the watchdog ping.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

from beaconlite import __version__, clock, reaper, sdnotify, store
from beaconlite.config import Config, check_targets, load_config
from beaconlite.dispatch import Dispatcher
from beaconlite.errors import BeaconError, RunCancelled
from beaconlite.lock import DaemonLock
from beaconlite.notify import Notifier
from beaconlite.output import iso
from beaconlite.runner import Runner
from beaconlite.scheduler import Scheduler
from beaconlite.units import format_duration

log = logging.getLogger(__name__)

GAP = 2.0  # a tick this much later than due, or elapsed time this far ahead: sleep / freeze
PRUNE_EVERY = 86400.0
TICK_PHASE = 0.5  # seconds past the whole second


class Daemon:
    def __init__(self, config: Config):
        self.config = config
        self.host = socket.gethostname()
        self.lock = DaemonLock(config.daemon.database, store.file_mode(config.daemon.group_access))
        self._wake = threading.Event()
        self._stop = False
        self._reload = False
        self.instance: int | None = None
        self.runner: Runner | None = None
        self.dispatcher: Dispatcher | None = None
        self.scheduler: Scheduler | None = None
        self._published: dict | None = None
        self._last_tick = self._clocks()
        self._last_gap: tuple[str | None, float] = (None, 0.0)

    @property
    def tick_interval(self) -> float:
        watchdog = sdnotify.watchdog_interval()
        return min(1.0, self.config.daemon.heartbeat_interval, watchdog or 1.0)

    # -- start ----------------------------------------------------------------------------

    def run(self, handle_signals: bool = True) -> int:
        """Run until SIGTERM / SIGINT (or request_stop()); 0 after a clean stop."""
        settings = self.config.daemon
        store.ensure_directory(settings.database.parent, settings.group_access)
        self.lock.acquire()  # LockHeld: another daemon serves this database
        store.open_writer(settings.database, settings.group_access)
        now = self.started_at = clock.wall()
        previous = store.latest_daemon()
        self.instance = store.register_instance(
            "daemon", os.getpid(), self.host, __version__, settings.orphan_after, now
        )
        self.notifier = Notifier(self.config)
        self.runner = Runner(self.config, self.instance, on_end=self._on_end)
        self.dispatcher = Dispatcher(self.config, self.runner, on_skip=self.notifier.run_ended)
        self._reap(now)  # before anything fires: no row of a dead instance stays "running"
        self.scheduler = Scheduler(self.dispatcher.tz, self._on_fire, self.runner.start_gate)
        self.scheduler.sync(self.config.jobs)
        if handle_signals:
            self._install_signals()
        self.scheduler.start()
        since = f" since {iso(previous.stopped_at or previous.heartbeat_at)}" if previous else ""
        self.dispatcher.recover_missed(clock.wall(), f"the daemon was not running{since}")
        self._publish()
        log.info(
            "beaconlite %s started: pid %d, %d job(s), database %s",
            __version__,
            os.getpid(),
            len(self.config.jobs),
            settings.database,
            extra={"event": "daemon.start"},
        )
        sdnotify.notify("READY=1", f"STATUS={self._status_line()}")
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def request_stop(self) -> None:
        self._stop = True
        self._wake.set()

    def request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda signum, frame: self.request_stop())
        signal.signal(signal.SIGINT, lambda signum, frame: self.request_stop())
        signal.signal(signal.SIGHUP, lambda signum, frame: self.request_reload())

    # -- the tick -------------------------------------------------------------------------

    @staticmethod
    def _clocks() -> tuple[float, float, float]:
        return clock.monotonic(), clock.elapsed(), clock.wall()

    def _loop(self) -> None:
        self._last_tick = last = self._clocks()
        beat_at = reap_at = last[0]
        prune_at = last[0] + 60 - PRUNE_EVERY  # first prune a minute after start
        wedge = os.environ.get("BEACONLITE_TEST_WEDGE_TICK")  # test hook: a stuck tick
        while not self._stop:
            interval = self.tick_interval
            # Tick half-way between whole seconds, where schedules put their slots: the
            # tick's own writes then never queue up with a burst of fires.
            self._wake.wait(interval - (clock.wall() - TICK_PHASE) % interval)
            while wedge and os.path.exists(wedge) and not self._stop:
                time.sleep(0.05)
            self._wake.clear()
            if self._stop:
                break
            if self._reload:
                self._reload = False
                self.reload()
            mono, elapsed, now = self._clocks()
            try:
                gap = self._explain_gap(last, (mono, elapsed, now), interval)
                if gap:
                    log.warning("%s; catching up", gap, extra={"event": "daemon.gap"})
                    self._last_gap = (gap, mono)
                self._last_tick = (mono, elapsed, now)
                step = (now - last[2]) - (elapsed - last[1])
                if clock.HAS_BOOTTIME and abs(step) > GAP:
                    log.warning(
                        "wall clock stepped by %+.1fs (not counted as elapsed time)",
                        step,
                        extra={"event": "clock.step"},
                    )
                last = (mono, elapsed, now)
                self.runner.enforce_deadlines()
                self._serve_requests(now)
                self.dispatcher.tick(now)
                if gap or mono - beat_at >= self.config.daemon.heartbeat_interval:
                    beat_at = mono
                    store.heartbeat(self.instance, [r.run_id for r in self.runner.live_runs()], now)
                if gap or mono - reap_at >= self.config.daemon.reaper_interval:
                    reap_at = mono
                    self._reap(now)
                if gap:
                    # Missed slots from the ledger, by elapsed-time-aware wall clock; then
                    # wake APScheduler, whose monotonic wait would otherwise end late.
                    self.dispatcher.recover_missed(now, gap, since=self.started_at)
                    self.scheduler.wakeup()
                if self.config.daemon.keep_history and mono - prune_at >= PRUNE_EVERY:
                    prune_at = mono
                    self._prune_in_background(now - self.config.daemon.keep_history)
                self._publish()
            except Exception:  # a loop boundary: log, keep ticking
                log.exception("tick failed")
                continue
            if self.scheduler.running():
                sdnotify.notify("WATCHDOG=1", f"STATUS={self._status_line()}")

    @staticmethod
    def _explain_gap(before: tuple, after: tuple, interval: float) -> str | None:
        """A suspend or a freeze between two readings of the clocks: why, or None."""
        d_mono, d_elapsed, d_wall = (a - b for a, b in zip(after, before))
        # Linux: elapsed (CLOCK_BOOTTIME) minus monotonic is time suspended. Elsewhere the
        # wall clock is the only clock that counts sleep, so a wall jump reads as a suspend.
        suspended = d_elapsed - d_mono if clock.HAS_BOOTTIME else d_wall - d_mono
        if suspended > GAP:
            return f"the machine was suspended for {format_duration(suspended)}"
        if d_mono - interval > GAP:
            return f"the daemon was frozen for {format_duration(d_mono - interval)}"
        return None

    def _on_fire(self, job_name: str, slots: list[float]) -> None:
        try:  # runs on APScheduler's thread: never let an error escape into it
            why = "the scheduler fired late"
            if len(slots) > 1:  # why several at once? APScheduler may wake before our tick
                gap, seen_at = self._last_gap
                recent = gap if clock.monotonic() - seen_at < 10 else None
                why = self._explain_gap(self._last_tick, self._clocks(), self.tick_interval) or recent or why
            self.dispatcher.fire(job_name, slots, clock.wall(), why)
        except Exception:
            log.exception("fire of %s failed", job_name)

    def _on_end(self, live, status: str) -> None:
        self.dispatcher.on_end(live, status)
        self.notifier.run_ended(live.job.name, live.run_id, status)

    def _serve_requests(self, now: float) -> None:
        for request in store.take_requests(now):
            if request.kind == "trigger":
                job = self.config.job(request.job)
                if job is None:
                    store.answer_request(request.id, error=f"no job named {request.job!r}")
                    continue
                outcome = self.dispatcher.trigger(job, request.created_at)
                error = "queued" if outcome.queued else (outcome.skipped or "")
                store.answer_request(request.id, result_run_id=outcome.run_id, error=error)
            elif request.kind == "cancel":
                store.answer_request(
                    request.id, result_run_id=request.run_id, error=self._cancel(request.run_id, now)
                )

    def _cancel(self, run_id: int, now: float) -> str:
        live = self.runner.get(run_id)
        if live is not None:
            live.abort(RunCancelled, "cancelled on request")
            return ""
        status = store.run_status(run_id)
        if status is None:
            return f"no run with id {run_id}"
        if status != "running":
            return f"run {run_id} is not live (it is {status})"
        orphans = {
            o.id: o
            for o in reaper.find_orphans(now, self.host, daemon_lock_free=True, own_instance=self.instance)
        }
        if run_id in orphans:
            store.finish_abandoned(
                run_id, "cancelled", f"cancelled on request ({orphans[run_id].reason})", now
            )
            return ""
        return f"run {run_id} belongs to a live foreground `beaconlite run`: interrupt that process"

    def _reap(self, now: float) -> None:
        orphans = reaper.find_orphans(now, self.host, daemon_lock_free=True, own_instance=self.instance)
        grace = self.config.daemon.abort_grace
        for row in store.live_runs(self.instance):
            # Our own rows are judged by their deadline only; a thread still alive is aborted
            # (its grace timer records it), a row no thread serves is flipped here.
            if row.deadline_at + grace < now and self.runner.get(row.id) is None:
                orphans.append(
                    reaper.Orphan(row.id, row.job, row.started_at, "past its deadline and no longer running")
                )
        reaper.reap(orphans, now)

    def _prune_in_background(self, before: float) -> None:
        def prune():
            try:
                count = store.prune(before)
                log.info("pruned %d finished run(s) older than keep_history", count, extra={"event": "prune"})
            except Exception:
                log.exception("prune failed")
            finally:
                store.db.close()

        threading.Thread(target=prune, name="prune", daemon=True).start()

    def _publish(self) -> None:
        """The job list and next fire times, for `status` (written only when they change)."""
        nxt = self.scheduler.next_fire_times()
        states = [
            {
                "name": j.name,
                "schedule": j.schedule,
                "enabled": int(j.enabled),
                "next_run_at": nxt.get(j.name),
            }
            for j in self.config.jobs
        ]
        key = repr(states)
        if key != self._published:
            store.save_job_states(states)
            self._published = key

    def _status_line(self) -> str:
        live = len(self.runner.live_runs())
        times = [t for t in self.scheduler.next_fire_times().values() if t]
        nxt = time.strftime("%H:%M:%S", time.localtime(min(times))) if times else "none"
        return f"{live} live run(s), next fire {nxt}"

    # -- reload and stop ------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-read the config; a bad one is logged and the old one kept."""
        try:
            config = load_config(self.config.path)
            check_targets(config)
        except BeaconError as e:
            log.error("reload refused, keeping the running config: %s", e, extra={"event": "daemon.reload"})
            return
        if config.daemon.database != self.config.daemon.database:
            log.warning("reload: a new database path takes effect at the next start")
        self.config = config
        self.runner.config = config
        self.dispatcher.reconfigure(config)
        self.notifier.config = config
        self.scheduler.sync(config.jobs)
        self._publish()
        log.info("config reloaded: %d job(s)", len(config.jobs), extra={"event": "daemon.reload"})

    def _shutdown(self) -> None:
        sdnotify.notify("STOPPING=1")
        settings = self.config.daemon
        log.info(
            "stopping (%s live run(s), on_stop = %s)",
            len(self.runner.live_runs()),
            settings.on_stop,
            extra={"event": "daemon.stop"},
        )
        self.scheduler.shutdown()
        self.dispatcher.drop_pending("the daemon is stopping", clock.wall())
        if settings.on_stop == "cancel":
            self.runner.abort_all("daemon stopping")
            self._wait_for_runs(settings.abort_grace)
            for live in self.runner.live_runs():
                live.kill_process()
                self.runner.give_up(live)
        else:
            self._wait_for_runs(None)  # each run ends by its deadline (+ grace) at the latest
        store.stop_instance(self.instance, clock.wall())
        store.save_job_states(
            [
                {**s, "next_run_at": None}
                for s in (
                    {"name": j.name, "schedule": j.schedule, "enabled": int(j.enabled)}
                    for j in self.config.jobs
                )
            ]
        )
        store.close()
        self.lock.release()
        log.info("stopped", extra={"event": "daemon.stopped"})

    def _wait_for_runs(self, limit: float | None) -> None:
        deadline = None if limit is None else clock.monotonic() + limit
        while self.runner.live_runs():
            if deadline is not None and clock.monotonic() >= deadline:
                return
            time.sleep(0.02)
