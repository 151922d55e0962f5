"""The daemon's lifecycle: lock, recover, schedule, tick, signals, stop.

The tick (every second, or faster when heartbeats or the watchdog ask for it) is where the
daemon notices everything APScheduler cannot. It is a loop of named duties, each contained
(one that fails is logged and the others still run) and each waiting at most briefly on the
database, so that an outage is never mistaken for a freeze. ``tick(clocks)`` runs one.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import time
from dataclasses import dataclass

from beaconlite import __version__, clock, journal, loader, logs, reaper, sdnotify, store, timing
from beaconlite.config import Config
from beaconlite.errors import ConfigError, Refused, Unreachable, WriteFailed
from beaconlite.inbox import Inbox
from beaconlite.loader import Code
from beaconlite.lock import DaemonLock
from beaconlite.notify import Notifier
from beaconlite.places import is_postgres, prepare_database_directory
from beaconlite.redaction import Redactor
from beaconlite.reloading import Reloading, compare
from beaconlite.render import iso
from beaconlite.runner import RunEnd, Runner
from beaconlite.scheduler import Fires, Scheduler
from beaconlite.slots import Slots
from beaconlite.webapp import DaemonView, WebApp
from beaconlite.webserver import Server

log = logging.getLogger(__name__)

DUTIES = (
    "housekeeping",
    "reload",
    "requests",
    "pauses",
    "deadlines",
    "pending_ends",
    "retries",
    "heartbeats",
    "reaper",
    "recovery",
    "database_file",
    "leaks",
    "prune",
    "publish",
)


@dataclass(frozen=True)
class Tick:
    clocks: clock.Clocks
    gap: str | None  # why this tick came late (a suspend, a freeze), or None

    @property
    def now(self) -> float:
        return self.clocks.wall


class Daemon:
    def __init__(self, config: Config):
        self.config = config
        self.host = socket.gethostname()
        # A cluster on PostgreSQL (SPEC 11) has no daemon lock: leases say who lives.
        self.cluster = is_postgres(config.daemon.database)
        self.lock = (
            None
            if self.cluster
            else DaemonLock(config.daemon.database, store.file_mode(config.daemon.group_access))
        )
        self.housekeeper = not self.cluster  # a lone daemon keeps its own house
        self._clock_warned = False
        self.exit_code = 0
        # Wakes the tick's wait. Not a threading.Event: a signal handler runs between two
        # bytecodes of the main thread, maybe while that thread holds the Event's own lock
        # (in wait() or clear()), and set() would then wait for it forever. A byte on a
        # socket takes no Python lock.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = False
        self._reload_wanted = False
        self._reload_requests: list[int] = []  # `beaconlite reload` requests to answer
        self._reloading: Reloading | None = None
        self.instance: int | None = None
        self.runner: Runner | None = None
        self.slots: Slots | None = None
        self.scheduler: Scheduler | None = None
        self._published: Config | None = None  # the config whose job list `status` reads
        self._last = clock.Clocks.read()
        self._last_gap: tuple[str | None, float] = (None, 0.0)
        self._due: dict[str, float] = {}  # duty -> monotonic time it is next due
        self._failing: set[str] = set()  # duties whose last run raised (logged once)
        self._leaked_written = 0
        self._database_id: tuple[int, int] | None = None
        self.web: Server | None = None

    @property
    def tick_interval(self) -> float:
        watchdog = sdnotify.watchdog_interval()
        return min(timing.TICK, self.config.daemon.heartbeat_interval, watchdog or timing.TICK)

    # -- start ----------------------------------------------------------------------------

    def run(self, handle_signals: bool = True) -> int:
        """Run until SIGTERM / SIGINT (or request_stop()); the exit code."""
        try:
            self.start(handle_signals)
        except (WriteFailed, *store.DRIVER_ERRORS) as e:
            if not self.cluster:
                raise
            cause = e.cause if isinstance(e, WriteFailed) else " ".join(str(e).split())
            raise Unreachable(
                f"{self.config.daemon.database}: the database went away during the start ({cause}); "
                "exiting to be restarted"
            ) from None
        try:
            self._loop()
        finally:
            self._shutdown()
        return self.exit_code

    def start(self, handle_signals: bool = True) -> None:
        settings = self.config.daemon
        self.code = loader.load_bounded(self.config)  # ConfigError (exit 2) before anything else
        prepare_database_directory(self.config)  # ConfigError naming the key
        if self.cluster:
            store.open_writer(settings.database, max_connections=settings.max_connections)
            self._follow_database_clock()
        else:
            self.lock.acquire()  # LockHeld: another daemon serves this database
            for path, old, new in store.tighten_modes(settings.database, settings.group_access):
                log.warning(
                    "tightened the mode of %s from %04o to %04o",
                    path,
                    old,
                    new,
                    extra={"event": "store.mode"},
                )
            store.open_writer(settings.database, settings.group_access)
        self.web = self._start_web()  # before anything is recorded: a bad address stops the start
        if not self.cluster:
            self._database_id = self._stat_database()
            journal.replay(settings.database)  # ends a stop could not write, before the reaper
        now = self.started_at = clock.wall()
        previous = store.latest_daemon()
        self.instance = store.register_instance(
            "daemon", os.getpid(), self.host, __version__, settings.orphan_after, now
        )
        self.notifier = Notifier(self.config)
        self.runner = Runner(self.config, self.code, self.instance, on_end=self._on_end)
        self.slots = Slots(self.config, self.runner, notify=self.notifier.run_ended)
        self.inbox = Inbox(self.slots, self.runner, self.host, self.request_reload)
        self._reap(now)  # before anything fires: no row of a dead instance stays "running"
        self.scheduler = Scheduler(self._on_fires)
        self.scheduler.sync(self.config.jobs)
        if handle_signals:
            self._install_signals()
        self.scheduler.start()
        since = f" since {iso(previous.stopped_at or previous.heartbeat_at)}" if previous else ""
        with store.patience(timing.FIRE_WRITE_WAIT):
            self.slots.recover_missed(clock.wall(), f"the daemon was not running{since}")
        self._publish(None)
        log.info(
            "beaconlite %s started: pid %d, %d job(s), database %s",
            __version__,
            os.getpid(),
            len(self.config.jobs),
            settings.database,
            extra={"event": "daemon.start"},
        )
        sdnotify.notify("READY=1", f"STATUS={self._status_line()}")

    def _start_web(self) -> Server | None:
        settings = self.config.web
        if not settings.listen:
            return None
        view = DaemonView(
            lambda: self.config, self.config.daemon.database, self.host, self.wake, self._web_reap
        )
        try:
            server = Server(*settings.address, WebApp(view))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise Refused(f"[web] listen = {settings.listen}: the address is in use") from None
            raise ConfigError(
                f'{self.config.path}: [web]: key "listen": {settings.listen}: {e.strerror}'
            ) from None
        server.start()
        log.info("web endpoint on http://%s", settings.listen, extra={"event": "web.start"})
        return server

    def _web_reap(self, dry_run: bool) -> list:
        now = clock.wall()
        orphans = reaper.find_orphans(now, self.host, daemon_lock_free=True, own=self._own())
        return orphans if dry_run else reaper.reap(orphans, now)

    def request_stop(self, exit_code: int = 0) -> None:
        self.exit_code = max(self.exit_code, exit_code)
        self._stop = True
        self.wake()

    def request_reload(self, request_id: int | None = None) -> None:
        """Reload at the next tick (a signal handler calls this: it only sets flags)."""
        if request_id is not None:
            self._reload_requests.append(request_id)
        self._reload_wanted = True
        self.wake()

    def wake(self) -> None:
        """Tick now (any thread, or a signal handler: no lock is taken)."""
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (a wake-up is pending anyway) or closed (stopped)
            pass

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda signum, frame: self.request_stop())
        signal.signal(signal.SIGINT, lambda signum, frame: self.request_stop())
        signal.signal(signal.SIGHUP, lambda signum, frame: self.request_reload())

    # -- the tick -------------------------------------------------------------------------

    def _loop(self) -> None:
        self._last = clock.Clocks.read()
        while not self._stop:
            interval = self.tick_interval
            # Tick half-way between whole seconds, where schedules put their slots: the
            # tick's own writes then never queue up with a burst of fires.
            timeout = interval - (clock.wall() - timing.TICK_PHASE) % interval
            if select.select([self._wake_r], [], [], timeout)[0]:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except BlockingIOError:
                    pass  # drained
            if self._stop:
                break
            self.tick(clock.Clocks.read())

    def tick(self, clocks: clock.Clocks) -> None:
        """One tick: every duty once (each contained), then the watchdog ping."""
        gap = clock.explain_gap(self._last, clocks, self.tick_interval)
        if gap:
            log.warning("%s; catching up", gap, extra={"event": "daemon.gap"})
            self._last_gap = (gap, clocks.monotonic)
        step = (clocks.wall - self._last.wall) - (clocks.elapsed - self._last.elapsed)
        if clock.HAS_BOOTTIME and abs(step) > timing.GAP:
            log.warning(
                "wall clock stepped by %+.1fs (not counted as elapsed time)",
                step,
                extra={"event": "clock.step"},
            )
        self._last = clocks
        tick = Tick(clocks, gap)
        with store.patience(timing.TICK_WRITE_WAIT):
            for duty in DUTIES:
                self._perform(duty, tick)
        if self.cluster:
            store.close()  # the tick's connection back to the pool (a dead one is discarded)
        if self.scheduler.running():
            sdnotify.notify("WATCHDOG=1", f"STATUS={self._status_line()}")

    def _perform(self, duty: str, tick: Tick) -> None:
        try:
            getattr(self, f"_{duty}")(tick)
        except WriteFailed:
            pass  # the store logs an outage once, when it starts and when it ends
        except Exception as e:  # a loop boundary: log once per failing streak, keep ticking
            if self.cluster and isinstance(e, store.DRIVER_ERRORS):
                store.read_failed(e)  # a read met the server gone: the outage, logged once
                return
            if duty not in self._failing:
                log.exception("tick duty %r failed", duty)
            self._failing.add(duty)
        else:
            self._failing.discard(duty)

    def _every(self, duty: str, interval: float, tick: Tick) -> bool:
        """True when ``duty`` is due (always after a gap); then it is due again in ``interval``."""
        if tick.gap is None and tick.clocks.monotonic < self._due.get(duty, 0.0):
            return False
        self._due[duty] = tick.clocks.monotonic + interval
        return True

    # -- the duties -----------------------------------------------------------------------

    def _housekeeping(self, tick: Tick) -> None:
        """In a cluster: hold (or try for) the housekeeping lease; its holder prunes,
        publishes the job list and records slots no node claimed."""
        if not self.cluster:
            return
        was = self.housekeeper
        self.housekeeper = store.nodes.hold_lease(
            store.nodes.HOUSEKEEPING, self.instance, timing.HOUSEKEEPING_LEASE
        )
        if self.housekeeper and not was:
            self._published = None  # publish the whole job list
            log.info("this node keeps the house now", extra={"event": "cluster.housekeeper"})
        if self.housekeeper and self._every("unclaimed", self.config.daemon.reaper_interval, tick):
            self.slots.record_unclaimed(tick.now, since=self.started_at)
            self.slots.record_owed_retries(tick.now)

    def _requests(self, tick: Tick) -> None:
        """Requests from the CLI: trigger, cancel."""
        self.inbox.take(tick.now, self._own())

    def _pauses(self, tick: Tick) -> None:
        """A job paused since the last look: its held fire and pending retry are dropped."""
        waiting = self.slots.waiting_jobs()
        if waiting:
            paused = waiting & set(store.paused_jobs())
            if paused:
                self.slots.drop_waiting(paused, "paused", tick.now)
        self.slots.drop_refused(tick.now)

    def _deadlines(self, tick: Tick) -> None:
        """Runs overdue by elapsed time (the alarm misses time asleep); runs past their grace."""
        self.runner.watch()

    def _pending_ends(self, tick: Tick) -> None:
        """Ends the database refused so far, written until they land."""
        self.runner.record_pending()

    def _retries(self, tick: Tick) -> None:
        self.slots.tick(tick.now)

    def _heartbeats(self, tick: Tick) -> None:
        """Our heartbeats; a run whose end someone else recorded is stopped here."""
        if not self._every("heartbeats", self.config.daemon.heartbeat_interval, tick):
            return
        ids = [r.run_id for r in self.runner.live_runs() + self.runner.pending_ends()]
        if self.cluster:
            self._follow_database_clock()
        try:
            ended = store.heartbeat(self.instance, ids, tick.now)
        except store.nodes.Fenced:
            self._fence()
            return
        for run_id in ended:
            self.runner.disown(run_id, store.run_status(run_id))

    def _follow_database_clock(self) -> None:
        """A node keeps the database's time (SPEC 11): our clock corrected by the offset
        measured here, half the round trip taken off."""
        before = time.time()
        database = store.nodes.database_clock()
        after = time.time()
        offset = database - (before + after) / 2
        clock.follow(offset)
        if abs(offset) > 1.0 and not self._clock_warned:
            log.warning(
                "this machine's clock is %+.1fs off the database's; beaconlite keeps the database's",
                -offset,
                extra={"event": "clock.database_offset"},
            )
        self._clock_warned = abs(offset) > 1.0

    def _fence(self) -> None:
        """Our lease is gone (we were frozen, or cut off from the database): peers may have
        rescued our runs. Abort them, write nothing more for them, and join again as a new
        instance."""
        live = self.runner.live_runs()
        log.error(
            "node %d lost its lease (frozen, or cut off from the database); aborting %d run(s) "
            "and joining again as a new node",
            self.instance,
            len(live),
            extra={"event": "cluster.fenced"},
        )
        for run in live:
            self.runner.disown(run.run_id, "fenced")
        self.runner.forget_pending_ends()
        self.instance = store.register_instance(
            "daemon", os.getpid(), self.host, __version__, self.config.daemon.orphan_after, clock.wall()
        )
        self.runner.instance_id = self.instance
        self._leaked_written = 0
        log.info("joined again as node %d", self.instance, extra={"event": "cluster.join"})

    def _reaper(self, tick: Tick) -> None:
        # In a cluster every node looks each tick (a small read of the live runs): a dead
        # peer's runs are flipped within orphan_after and a tick, whoever keeps the house.
        if self.cluster or self._every("reaper", self.config.daemon.reaper_interval, tick):
            self._reap(tick.now)

    def _recovery(self, tick: Tick) -> None:
        """Slots missed while asleep, frozen, or while the database refused writes."""
        if self.slots.has_unrecorded():
            self.slots.recover_unrecorded(tick.now)
        if tick.gap:
            # Missed slots from the ledger, by elapsed-time-aware wall clock; then wake
            # APScheduler, whose monotonic wait would otherwise end late.
            self.slots.recover_missed(tick.now, tick.gap, since=self.started_at)
            self.scheduler.wakeup()

    def _database_file(self, tick: Tick) -> None:
        """A database file deleted or replaced under us: stop, so the service manager
        restarts us on the file now there. (stat only: reopening the file would drop
        SQLite's POSIX locks on it.)"""
        if self.cluster or not self._every("database_file", timing.DATABASE_CHECK, tick):
            return
        now_there = self._stat_database()
        if now_there != self._database_id:
            what = "deleted" if now_there is None else "replaced"
            log.error(
                "the database file %s was %s under the running daemon; stopping (exit 1)",
                self.config.daemon.database,
                what,
                extra={"event": "daemon.database_gone"},
            )
            self.request_stop(1)

    def _leaks(self, tick: Tick) -> None:
        """Leaked threads: published for health; too many, and we restart to reclaim them."""
        leaked = self.runner.leaked_threads()
        if leaked != self._leaked_written:
            store.set_leaked_threads(self.instance, leaked)
            self._leaked_written = leaked
        settings = self.config.daemon
        if leaked and (leaked >= settings.max_leaked_threads or leaked >= settings.max_concurrent_runs):
            if not self._stop:
                log.error(
                    "restarting to reclaim %d leaked thread(s) (max_leaked_threads = %d)",
                    leaked,
                    settings.max_leaked_threads,
                    extra={"event": "daemon.leaks"},
                )
            self.request_stop(1)

    def _prune(self, tick: Tick) -> None:
        keep = self.config.daemon.keep_history
        if not self.housekeeper:
            return
        if "prune" not in self._due:  # the first prune comes a minute after the start
            self._due["prune"] = tick.clocks.monotonic + timing.FIRST_PRUNE
        if keep and tick.clocks.monotonic >= self._due["prune"]:
            self._due["prune"] = tick.clocks.monotonic + timing.PRUNE_EVERY
            store.prune_in_background(tick.now - keep)

    def _publish(self, tick: Tick | None) -> None:
        """The job list and next fire times, for `status`: the whole list at the start and
        after a reload, then only the fire times that moved. (In a cluster: the housekeeper.)"""
        if not self.housekeeper:
            return
        if self._published is not self.config:
            store.save_job_states(store.job_states_of(self.config.jobs, self.scheduler.next_fire_times()))
            self._published = self.config
            return
        moved = self.scheduler.changed_fire_times()
        if moved:
            store.save_fire_times(moved)

    # -- helpers of the duties ------------------------------------------------------------

    def _stat_database(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.config.daemon.database)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _on_fires(self, fires: Fires) -> None:
        """Every due slot of one scheduler wake-up; their rows in a few transactions."""
        why = "the scheduler fired late"
        if any(len(slots) > 1 for _, slots in fires):  # why several at once? it may wake before our tick
            gap, seen_at = self._last_gap
            recent = gap if clock.monotonic() - seen_at < 10 else None
            why = clock.explain_gap(self._last, clock.Clocks.read(), self.tick_interval) or recent or why
        if self.cluster:
            # No run starts before its slot by the database's clock: a node whose own clock
            # is fast has been woken early by APScheduler (which reads that clock). Asked
            # afresh (one round trip): the clock may have been stepped since the heartbeat.
            try:
                self._follow_database_clock()
            except WriteFailed:
                pass  # the fires' own writes meet the outage too, and defer their slots
            early = max(slot for _, slots in fires for slot in slots) - clock.wall()
            if early > 0:
                time.sleep(min(early, timing.CLUSTER_EARLY_WAIT))
            # Every node takes the jobs' decision locks in one order: never a deadlock.
            fires = sorted(fires, key=lambda fire: fire[0])
        with self.runner.starting_together():
            self._record_fires(fires, why)
        if self.cluster:
            store.close()

    def _record_fires(self, fires: Fires, why: str) -> None:
        for i in range(0, len(fires), timing.FIRES_PER_TRANSACTION):
            if self._stop:
                # The stop waits for this wake-up: the slots not recorded yet are left to the
                # next start, which counts them as missed while the daemon was not running.
                log.info(
                    "stopping: %d due slot(s) left to the next start",
                    len(fires) - i,
                    extra={"event": "daemon.stop"},
                )
                return
            try:  # runs on APScheduler's thread: never let an error escape into it
                with store.patience(timing.FIRE_WRITE_WAIT), store.batch():
                    now = clock.wall()
                    if self.cluster:
                        try:
                            store.nodes.prepare_claims(
                                fires[i : i + timing.FIRES_PER_TRANSACTION], self.instance
                            )
                        except WriteFailed:
                            pass  # the outage: each fire below defers its slots, none is lost
                    for job_name, slots in fires[i : i + timing.FIRES_PER_TRANSACTION]:
                        try:
                            self.slots.fire(job_name, slots, now, why)
                        except WriteFailed:
                            raise
                        except Exception:
                            log.exception("fire of %s failed", job_name)
            except WriteFailed:
                pass  # the batch's slots wait as unrecorded ones; the outage is logged once
            except Exception:
                log.exception("a batch of fires failed")

    def _on_end(self, end: RunEnd) -> None:
        if not self.slots.on_end(end):  # a run that will be retried is not an outcome yet
            self.notifier.run_ended(end.job, end.run_id, end.status, end.attempt)

    def _own(self) -> reaper.Own:
        serving = {r.run_id for r in self.runner.live_runs() + self.runner.pending_ends()}
        return reaper.Own(self.instance, frozenset(serving), self.config.daemon.abort_grace)

    def _reap(self, now: float) -> None:
        reaper.reap(reaper.find_orphans(now, self.host, daemon_lock_free=True, own=self._own()), now)

    def _status_line(self) -> str:
        live = len(self.runner.live_runs())
        earliest = self.scheduler.next_fire()
        nxt = time.strftime("%H:%M:%S", time.localtime(earliest)) if earliest else "none"
        return f"{live} live run(s), next fire {nxt}"

    # -- reload and stop ------------------------------------------------------------------

    def _reload(self, tick: Tick) -> None:
        """A reload asked for (SIGHUP, `beaconlite reload`): started off the tick, applied
        here once it is read, whole, or refused whole."""
        if self._reloading is None and self._reload_wanted:
            self._reload_wanted, requests, self._reload_requests = False, self._reload_requests, []
            self._reloading = Reloading(self.config.path, self.code, requests)
        if self._reloading is None:
            return
        outcome = self._reloading.outcome()
        if outcome is None:
            return  # still reading: the tick goes on
        requests, self._reloading = self._reloading.requests, None
        if isinstance(outcome, str):
            log.error(
                "reload refused, keeping the running config: %s", outcome, extra={"event": "daemon.reload"}
            )
            for request in requests:
                store.answer_request(request, refused=outcome)
            return
        detail = self._apply_reload(*outcome, tick.now)
        for request in requests:
            store.answer_request(request, detail=detail)

    def _apply_reload(self, config: Config, code: Code, now: float) -> str:
        change = compare(self.config, config, self.code, code)
        if config.daemon.database != self.config.daemon.database:
            log.warning("reload: a new database path takes effect at the next start")
        self.config, self.code = config, code
        self.runner.config, self.runner.code = config, code
        self.slots.reconfigure(config)
        self.notifier.config = config
        self.scheduler.sync(config.jobs)
        logs.setup(config.daemon.log_level, config.daemon.log_format, Redactor(config.secrets))
        self.slots.drop_waiting(set(change.removed), "the job was removed by a reload", now)
        self._perform("publish", Tick(clock.Clocks.read(), None))
        summary = change.summary()
        log.info("reloaded: %s", summary, extra={"event": "daemon.reload"})
        return summary

    def _shutdown(self) -> None:
        """Stop firing, end every run, write what can be written within a bound, and keep
        the rest in the journal. Never raises: the exit code says whether all ends landed."""
        sdnotify.notify("STOPPING=1")
        settings = self.config.daemon
        log.info(
            "stopping (%s live run(s), on_stop = %s)",
            len(self.runner.live_runs()),
            settings.on_stop,
            extra={"event": "daemon.stop"},
        )
        unwritten: list[dict] = []
        try:
            if self.web is not None:
                self.web.stop()
            self.scheduler.shutdown()
            with store.patience(timing.FIRE_WRITE_WAIT):
                unwritten += self.slots.drop_pending("the daemon is stopping", clock.wall())
            if settings.on_stop == "cancel":
                self.runner.abort_all("daemon stopping")
                self._wait_for_runs(settings.abort_grace)
                for live in self.runner.live_runs():
                    live.kill_process()
                    self.runner.give_up(live)
            else:
                self._wait_for_runs(None)  # each run ends by its deadline (+ grace) at the latest
            self._write_pending_ends(timing.STOP_WRITE_WAIT)
            unwritten += [journal.end_entry(live.run_id, live.verdict) for live in self.runner.pending_ends()]
            if unwritten:
                self._keep_unwritten(unwritten)
            with store.patience(timing.TICK_WRITE_WAIT):
                self._mark_stopped()
        except Exception:  # a loop boundary of its own: the stop must end
            log.exception("stop failed")
            self.exit_code = max(self.exit_code, 1)
        finally:
            store.close()
            if self.lock is not None:
                self.lock.release()
            self._wake_r.close()
            self._wake_w.close()
        log.info("stopped (exit %d)", self.exit_code, extra={"event": "daemon.stopped"})

    def _write_pending_ends(self, limit: float) -> None:
        until = clock.monotonic() + limit
        while self.runner.pending_ends() and clock.monotonic() < until:
            with store.patience(min(1.0, max(0.0, until - clock.monotonic()))):
                self.runner.record_pending()
            if self.runner.pending_ends():
                time.sleep(0.1)

    def _keep_unwritten(self, entries: list[dict]) -> None:
        self.exit_code = max(self.exit_code, 1)
        runs = [str(e["run_id"]) for e in entries if e["kind"] == "end"]
        skips = sum(1 for e in entries if e["kind"] == "skip")
        # A cluster has no file beside its database: its peers' reapers record the runs.
        kept = not self.cluster and journal.write(
            self.config.daemon.database, entries, store.file_mode(self.config.daemon.group_access)
        )
        log.error(
            "could not write the end of run(s) %s and %d skipped row(s): %s; %s",
            ", ".join(runs) or "-",
            skips,
            store.outage.cause or "the database refused the writes",
            "kept them for the next start" if kept else "the next start's reaper will record the runs",
            extra={"event": "daemon.unrecorded"},
        )

    def _mark_stopped(self) -> None:
        try:
            store.stop_instance(self.instance, clock.wall())
            if not self.cluster:  # a cluster's other nodes still fire
                store.save_job_states(store.job_states_of(self.config.jobs, {}))  # nothing will fire
        except WriteFailed as e:  # the next start sees the lock free: this instance is gone
            log.warning("could not mark this instance stopped: %s", e)

    def _wait_for_runs(self, limit: float | None) -> None:
        deadline = None if limit is None else clock.monotonic() + limit
        while self.runner.live_runs():
            if deadline is not None and clock.monotonic() >= deadline:
                return
            if limit is None:
                self.runner.watch()  # "finish": the deadlines and their grace still hold
            time.sleep(0.02)
