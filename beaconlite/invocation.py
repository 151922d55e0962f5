"""What one CLI invocation reads: which config, which database, which zone, its arguments.

Which database a command reads is never a guess (SPEC section 6): with no config anywhere
on the search path and no ``--database``, a query says so on stderr; a config that is valid
TOML but fails validation does not blind a query (it reads its ``[daemon] database`` with a
one-line warning), while ``daemon``, ``run`` and ``check-config`` refuse it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from beaconlite.errors import ConfigError


def _meta() -> dict:
    return click.get_current_context().meta


def warn(message: str) -> None:
    click.echo(f"beaconlite: warning: {message}", err=True)


def load_config(required: bool = True):
    """The config named by --config / $BEACONLITE_CONFIG / the search path, or None.

    ``required``: a command that runs jobs needs a valid config with every ${VAR}. A query
    needs no secrets, and reads the database of an invalid config, with a warning.
    """
    from beaconlite.config import load_config as load
    from beaconlite.places import config_search_path, database_of, find_config

    meta = _meta()
    explicit = meta.get("config")
    if not explicit and "database" in meta and not required:
        return None  # --database alone: query that database, no config
    path = find_config(explicit)
    if path is None:
        looked = ", ".join(str(p) for p in config_search_path())
        if required:
            raise ConfigError(f"no config file found (looked for {looked}); use --config PATH")
        meta["no_config"] = looked
        return None
    if required:
        return load(path)
    try:
        return load(path, env_required=False)
    except ConfigError as e:
        meta["database"] = database_of(path)  # raises ConfigError when even that cannot be read
        warn(f"{e}; reading its database anyway")
        return None


def database_path(config) -> Path:
    """The database this invocation reads or changes (saying so when it is a default)."""
    from beaconlite.places import default_database

    meta = _meta()
    if "database" in meta:
        from beaconlite.places import database_location

        given = meta["database"]  # --database's text, or the location an invalid config names
        return database_location(given, Path.cwd()) if isinstance(given, str) else given
    if config is not None:
        return config.daemon.database
    path = default_database()
    if "no_config" in meta and not meta.get("default_said"):
        warn(f"no config found (looked in {meta['no_config']}); reading {path}")
        meta["default_said"] = True
    return path


def people_zone(config):
    """Where times are printed for people: daemon.timezone, else the host's zone (None)."""
    from beaconlite.cron import resolve_timezone

    return resolve_timezone(config.daemon.timezone) if config is not None else None


def open_for_query():
    """(config or None, database path, whether it exists) with the database open read-only."""
    from beaconlite import store

    config = load_config(required=False)
    path = database_path(config)
    return config, path, store.open_reader(path)


def job_named(config, name: str):
    job = config.job(name)
    if job is None:
        known = ", ".join(j.name for j in config.jobs) or "none"
        raise click.BadParameter(f"no job named {name!r} in {config.path} (jobs: {known})", param_hint="JOB")
    return job


def lock_free(path: Path) -> bool:
    """No daemon holds this database's lock (so none is running, whatever the rows say)."""
    from beaconlite.lock import daemon_alive
    from beaconlite.places import is_postgres

    if is_postgres(path):
        return False  # leases say who lives (store.daemon_state asks them)
    return path.exists() and not daemon_alive(path)


def duration_arg(value: str | None, what: str) -> float | None:
    from beaconlite.durations import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=what) from None


def when_arg(value: str, what: str, tz) -> float:
    from beaconlite.durations import parse_when

    try:
        return parse_when(value, tz)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=what) from None


def since_value(value: str, tz) -> float:
    """A duration back from now ("90m", "2w") or a date/time ("2026-11-24", read in ``tz``)."""
    from beaconlite.durations import parse_duration, parse_when

    try:
        return time.time() - parse_duration(value)
    except ValueError:
        pass
    try:
        return parse_when(value, tz or _host_zone())
    except ValueError:
        raise ValueError(
            f'{value!r} is neither a duration ("90m", "1d", "2w") nor a date/time ("2026-11-24T08:00")'
        ) from None


def since_arg(value: str | None, tz) -> float | None:
    """`--since`, or a usage error (exit 2)."""
    if value is None:
        return None
    try:
        return since_value(value, tz)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None


def _host_zone():
    from datetime import datetime

    return datetime.now().astimezone().tzinfo


def user_at_host() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"
