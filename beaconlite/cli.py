"""The command line: a click group of thin commands. Errors become exit codes here, only here.

Query commands import only the store and the config: no APScheduler, no requests. What an
invocation reads (which config, which database, which zone) is ``invocation``'s; what it
prints is ``render``'s.
"""

from __future__ import annotations

import enum
import sys
import time

import click

from beaconlite import __version__, render, statuses
from beaconlite.errors import BeaconError, Refused
from beaconlite.invocation import (
    database_path,
    duration_arg,
    job_named,
    load_config,
    lock_free,
    open_for_query,
    people_zone,
    since_arg,
    when_arg,
)


class ExitStatus(enum.IntEnum):
    OK = 0  # done / yes
    NEGATIVE = 1  # a well-formed request with a negative answer
    CANNOT = 2  # usage error, malformed argument, bad config, unusable database
    INTERRUPTED = 130  # a foreground command stopped by Ctrl-C, as shells expect


def exit_by_status(status: str) -> ExitStatus:
    return ExitStatus.OK if status in statuses.OK else ExitStatus.NEGATIVE


# -- global options, accepted before or after the command -------------------------------


def _remember(ctx: click.Context, param: click.Parameter, value):
    if value not in (None, False):
        ctx.meta[param.name] = value
    return value


def global_options(f):
    for option in (
        click.option(
            "--config",
            "-c",
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_remember,
            help="Config file (default: $BEACONLITE_CONFIG, "
            "./beaconlite.toml, ~/.config/beaconlite/config.toml, /etc/beaconlite/config.toml).",
        ),
        click.option(
            "--database",
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_remember,
            help="Query this database: a SQLite file or a postgresql:// URL (no config needed).",
        ),
        click.option(
            "--debug", is_flag=True, expose_value=False, callback=_remember, help="Show tracebacks."
        ),
    ):
        f = option(f)
    return f


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(f)


def setup_logging(config) -> None:
    from beaconlite import logs
    from beaconlite.redaction import Redactor

    logs.setup(config.daemon.log_level, config.daemon.log_format, Redactor(config.secrets))


def emit(value, as_json: bool, text: str) -> None:
    click.echo(render.dumps(value) if as_json else text)


# -- the commands -------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="beaconlite")
@global_options
def cli():
    """beaconlite: scheduled integrity runs that never hang."""


@cli.command("check-config")
@global_options
@click.option(
    "--from", "from_", metavar="TIME", help='Fire times after this (default now), e.g. "2026-03-08".'
)
@click.option(
    "--count", type=click.IntRange(1, 1000), default=3, show_default=True, help="Fire times per job."
)
@json_option
def check_config(from_, count, as_json):
    """Validate the config; list each job's next fire times, in its own zone."""
    from datetime import datetime, timezone

    from beaconlite.cron import next_fire_times, parse_schedule
    from beaconlite.loader import load_bounded

    config = load_config()
    load_bounded(config)
    after = time.time() if from_ is None else when_arg(from_, "--from", people_zone(config))
    start = datetime.fromtimestamp(after, timezone.utc)
    fires = {
        job.name: next_fire_times(parse_schedule(job.schedule), start, job.zone(), count)
        if job.schedule
        else None
        for job in config.jobs
    }
    emit(render.check_config_json(config, fires), as_json, render.check_config_text(config, fires))


@cli.command()
@global_options
@json_option
def status(as_json: bool):
    """Daemon state and one line per job."""
    from beaconlite import store

    config, path, exists = open_for_query()
    now = time.time()
    daemon, state = store.daemon_state(now, lock_free(path))
    rows = store.job_overview(config, running=state == "running")
    nodes = store.cluster_nodes(config.daemon.heartbeat_interval if config else 5.0) if exists else None
    value = render.status_json(daemon, state, rows, path, nodes)
    text = render.status_text(daemon, state, rows, now, path, exists, people_zone(config))
    if nodes is not None:
        text = f"{text}\n\n{render.nodes_text(nodes, people_zone(config))}"
    emit(value, as_json, text)


@cli.command()
@global_options
@click.option("--job", help="Only this job.")
@click.option("--status", "status_", type=click.Choice(statuses.ALL), help="Only this status.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=20, show_default=True)
@click.option(
    "--since", help='Started (skipped: recorded) within this long ("1h", "2w") or since a date/time.'
)
@json_option
def runs(job, status_, limit, since, as_json):
    """Run history, newest first."""
    from beaconlite import store

    config, path, exists = open_for_query()
    zone = people_zone(config)
    found = store.list_runs(job=job, status=status_, since=since_arg(since, zone), limit=limit)
    if not exists:
        text = f"no database yet at {path}"
    elif not found and job and job not in {name for name, *_ in store.known_jobs(config)}:
        text = f"no runs: no job named {job!r} in the config or the history"
    else:
        text = render.runs_text(found, zone)
    emit([render.run_json(r, total, ok) for r, total, ok in found], as_json, text)


@cli.command()
@global_options
@click.argument("run_id", type=int)
@json_option
def show(run_id, as_json):
    """One run with its steps, error, output tail (a Python run's log) and summary."""
    from beaconlite import store

    config, path, exists = open_for_query()
    found = store.get_run(run_id)
    if found is None:
        raise Refused(f"no run with id {run_id}" + ("" if exists else f" (no database yet at {path})"))
    run, steps = found
    detail = render.run_detail_json(run, steps)
    emit(detail, as_json, render.show_text(run, detail, people_zone(config)))
    return exit_by_status(run.status) if run.status != statuses.RUNNING else ExitStatus.OK


@cli.command()
@global_options
@click.option("--older-than", help='Finished more than this long ago, e.g. "30d" (default: keep_history).')
@click.option("--dry-run", is_flag=True, help="Count, delete nothing.")
@json_option
def prune(older_than, dry_run, as_json):
    """Delete finished runs older than DUR (default: the config's keep_history)."""
    from beaconlite import store
    from beaconlite.config import DaemonSettings

    config = load_config(required=False)
    age = duration_arg(older_than, "--older-than")
    if age is None:
        age = (config.daemon if config else DaemonSettings()).keep_history
    if not age:
        emit({"dry_run": dry_run, "pruned": 0}, as_json, "keep_history = 0: nothing is pruned")
        return ExitStatus.OK
    path = database_path(config)
    store.open_reader(path) if dry_run else store.open_for_changes(path)
    count = store.prune(time.time() - age, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    emit({"dry_run": dry_run, "pruned": count}, as_json, f"{verb} {count} finished run(s)")


@cli.command("run")
@global_options
@click.argument("job_name", metavar="JOB")
@json_option
def run_command(job_name, as_json):
    """Run JOB here in the foreground, recorded like any run; Ctrl-C cancels it."""
    from beaconlite import store
    from beaconlite.foreground import run_in_foreground

    config = load_config()
    job = job_named(config, job_name)
    setup_logging(config)
    run_id, status = run_in_foreground(config, job)
    run, steps = store.get_run(run_id)
    detail = render.run_detail_json(run, steps)
    duration = f" in {run.duration_s:.2f}s" if run.duration_s is not None else ""
    error = f": {run.error}" if run.error else ""
    emit(detail, as_json, f"run {run_id} ({job.name}) {status}{duration}{error}")
    return exit_by_status(status)


@cli.command()
@global_options
def daemon():
    """Run the scheduler in the foreground (service managers run this)."""
    from beaconlite.daemon import Daemon
    from beaconlite.places import refuse_open_config

    config = load_config()
    refuse_open_config(config.path)
    setup_logging(config)
    return Daemon(config).run()


@cli.command()
@global_options
@click.argument("job_name", metavar="JOB")
@click.option("--wait", is_flag=True, help="Wait for the run to end; exit by its status.")
@click.option("--timeout", help='With --wait: give up after this long, e.g. "10m".')
@json_option
def trigger(job_name, wait, timeout, as_json):
    """Ask the running daemon for a run of JOB now."""
    from beaconlite import client, store

    limit = duration_arg(timeout, "--timeout")
    config = load_config(required=False)
    if config is not None:
        job_named(config, job_name)
    client.require_daemon(database_path(config))
    answer = client.ask_daemon("trigger", job=job_name)
    if answer.answer == "queued":
        emit(
            {"job": job_name, "run_id": None, "queued": True},
            as_json,
            f"{job_name}: a run is live; this one is queued and starts when it ends",
        )
        return ExitStatus.OK
    run_id = answer.result_run_id
    if answer.answer == "refused":
        found = store.get_run(run_id) if run_id else None  # the skipped row that says why
        if found is None or not as_json:
            raise Refused(f"{job_name} did not start: {answer.error}")
        emit(render.run_detail_json(*found), as_json, "")
        return ExitStatus.NEGATIVE
    if not wait:
        emit({"job": job_name, "run_id": run_id}, as_json, f"run {run_id} ({job_name}) started")
        return ExitStatus.OK
    status = client.wait_for_end(run_id, limit)
    run, steps = store.get_run(run_id)
    if status == statuses.RUNNING:
        emit(render.run_detail_json(run, steps), as_json, f"run {run_id} ({job_name}) still running")
        return ExitStatus.NEGATIVE
    error = f": {run.error}" if run.error else ""
    emit(render.run_detail_json(run, steps), as_json, f"run {run_id} ({job_name}) {status}{error}")
    return exit_by_status(status)


@cli.command()
@global_options
@click.argument("run_id", type=int)
def cancel(run_id):
    """Stop a live run."""
    from beaconlite import client

    status = client.cancel(database_path(load_config(required=False)), run_id)
    click.echo(f"run {run_id} {status}")
    return ExitStatus.OK if status == statuses.CANCELLED else ExitStatus.NEGATIVE


@cli.command()
@global_options
@click.argument("job_name", metavar="JOB")
def pause(job_name):
    """Stop firing JOB (kept across restarts); its live run goes on, manual runs still work."""
    from beaconlite import client

    config = load_config(required=False)
    click.echo(client.pause(database_path(config), job_name, config, people_zone(config)))


@cli.command()
@global_options
@click.argument("job_name", metavar="JOB")
def resume(job_name):
    """Fire JOB again from its next slot (the slots it missed while paused are owed nothing)."""
    from beaconlite import client

    config = load_config(required=False)
    click.echo(client.resume(database_path(config), job_name, config))


@cli.command()
@global_options
def reload():
    """Ask the running daemon to re-read its config and job code; print what changed."""
    from beaconlite import client

    click.echo(client.reload(database_path(load_config(required=False))))


@cli.command()
@global_options
@click.option("--dry-run", is_flag=True, help="List the orphans, change nothing.")
@click.option("--older-than", help="Only runs started more than this long ago (default 0).")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=500, show_default=True)
@json_option
def reap(dry_run, older_than, batch_size, as_json):
    """Flip orphaned running rows to timeout now."""
    import socket

    from beaconlite import reaper, store
    from beaconlite.lock import daemon_alive

    age = duration_arg(older_than, "--older-than") or 0.0
    config = load_config(required=False)
    path = database_path(config)
    store.open_reader(path) if dry_run else store.open_for_changes(path)
    now = time.time()
    orphans = reaper.find_orphans(
        now, socket.gethostname(), daemon_lock_free=not daemon_alive(path), older_than=age
    )
    done = orphans if dry_run else reaper.reap(orphans, now, batch_size)
    emit(render.reap_json(dry_run, done), as_json, render.reap_text(dry_run, done, people_zone(config)))


@cli.command()
@global_options
@click.option("--prometheus", "as_prometheus", is_flag=True, help="Prometheus text format (always exits 0).")
@json_option
def health(as_prometheus, as_json):
    """The health verdict and metrics; exit 0 healthy, 1 not."""
    from beaconlite import health as health_check
    from beaconlite import store
    from beaconlite.errors import StoreError

    config = load_config(required=False)
    path = database_path(config)
    now, readable = time.time(), True
    try:
        store.open_reader(path)
        verdict = health_check.assess(config, now, lock_free(path))
    except StoreError as e:
        verdict, readable = health_check.unreadable(e), False
    if as_prometheus:
        click.echo(health_check.prometheus_text(config, verdict, now, readable), nl=False)
        return ExitStatus.OK
    emit(render.health_json(verdict), as_json, render.health_text(verdict))
    return ExitStatus.OK if verdict.healthy else ExitStatus.NEGATIVE


@cli.group()
@global_options
def service():
    """Render or install a systemd unit or launchd plist for this installation."""


def service_options(f):
    f = click.option("--launchd", is_flag=True, help="A launchd plist (macOS).")(f)
    return click.option("--user", is_flag=True, help="A per-user unit / agent.")(f)


@service.command("print")
@global_options
@service_options
def service_print(launchd, user):
    """Print the unit (or plist) for this beaconlite and config."""
    from beaconlite import service as svc

    config = load_config()
    text = svc.launchd_plist(config, user) if launchd else svc.systemd_unit(config, user)
    for warning in svc.warnings(config, launchd, user):
        click.echo(f"beaconlite: warning: {warning}", err=True)
    click.echo(text, nl=False)


@service.command("install")
@global_options
@service_options
@click.option("--force", is_flag=True, help="Overwrite an existing unit / plist.")
def service_install(launchd, user, force):
    """Install the unit (or plist) where the platform expects it."""
    from beaconlite import service as svc

    config = load_config()
    lines, warnings = svc.install(config, launchd, user, force)
    for warning in warnings:
        click.echo(f"beaconlite: warning: {warning}", err=True)
    click.echo("\n".join(lines))


# -- the entry point ----------------------------------------------------------------------


def error_line(message: str) -> str:
    """One line whatever the message quotes (a config value may hold a newline)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def fail(message: str) -> None:
    click.echo(f"beaconlite: error: {error_line(message)}", err=True)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = cli.main(args=args, prog_name="beaconlite", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help())
        code = ExitStatus.OK
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("beaconlite: interrupted", err=True)
        code = ExitStatus.INTERRUPTED
    except click.ClickException as e:
        fail(e.format_message())
        code = ExitStatus.CANNOT
    except Refused as e:
        fail(str(e))
        code = ExitStatus.NEGATIVE
    except BeaconError as e:
        if debug:
            raise
        fail(str(e))
        code = ExitStatus.CANNOT
    except Exception as e:
        if debug:
            raise
        fail(f"{type(e).__name__}: {e} (run with --debug for a traceback)")
        code = ExitStatus.CANNOT
    sys.exit(int(code or 0))
