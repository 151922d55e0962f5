"""The TOML config -> frozen dataclasses. The one place that knows every key and its default."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from beaconlite import __version__, statuses, values
from beaconlite.durations import parse_duration, parse_size
from beaconlite.errors import ConfigError
from beaconlite.places import Database, PostgresURL, database_location, default_database
from beaconlite.redaction import Redactor

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NOTIFY_ON = (*statuses.ALL[1:], statuses.RECOVERED)
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
JOB_NAME = re.compile(r"[A-Za-z0-9_.-]+")
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


# -- the shapes: every key once, with its default, its parser and (for a job) its kind ----


def key(
    default: Any = MISSING,
    parse: Callable = values.string,
    *,
    factory: Callable | None = None,
    kind: str = "",
):
    """A config key: its default, the parser of its TOML value, the job kind it belongs to."""
    metadata = {"parse": parse, "kind": kind}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def keys(shape: type) -> dict[str, Callable]:
    """A section's keys and their parsers, read off its dataclass."""
    return {f.name: f.metadata["parse"] for f in fields(shape) if "parse" in f.metadata}


def _same(v):
    return v  # a value whose shape the loader checks itself (it depends on other keys)


@dataclass(frozen=True)
class HttpSettings:
    connect_timeout: float = key(10.0, values.duration)
    read_timeout: float = key(300.0, values.duration)  # per socket read; the run deadline bounds it
    max_body: int = key(50_000_000, parse_size)
    user_agent: str = key(f"beaconlite/{__version__}")


@dataclass(frozen=True)
class Check:
    url: str = key("", values.plain)
    name: str = key("", values.plain)  # default: the URL without its query string (and credentials)
    method: str = key("GET", lambda v: values.choice(*METHODS)(values.string(v).upper()))
    headers: Mapping[str, str] = key(parse=values.table_of_str, factory=dict)
    body: str | None = key(None)
    json: Any = key(None, _same)
    expect_status: tuple[int, ...] | None = key(None, values.expect_status)  # None: any 2xx
    contains: str | None = key(None)
    expect_json: Mapping[str, Any] = key(parse=values.table, factory=dict)
    max_latency: float | None = key(None, values.duration)


@dataclass(frozen=True)
class JobSpec:
    name: str = key("")
    kind: str = "python"  # "python" | "command" | "checks": which of run, command, checks it has
    schedule: str | None = key(None, values.schedule)
    timezone: str = key("", values.timezone)  # the loader's default: daemon.timezone
    timeout: float = key(1800.0, values.duration)  # the loader's default: daemon.default_timeout
    enabled: bool = key(True, values.boolean)
    max_instances: int = key(1, values.int_in(1, 10000))
    overlap: str = key("skip", values.choice("skip", "replace", "queue"))
    misfire_grace: float = key(300.0, values.duration)
    catch_up: bool = key(True, values.boolean)
    min_success_rate: float = key(1.0, values.rate)
    retries: int = key(0, values.int_in(0, 100))
    retry_delay: float = key(60.0, values.duration)
    retry_on: tuple[str, ...] = key((statuses.ERROR,), values.list_of(values.choice(*statuses.FAILURES)))
    run: str | None = key(None, kind="python")
    params: Mapping[str, Any] = key(parse=values.table, factory=dict, kind="python")
    command: tuple[str, ...] | str | None = key(None, _same, kind="command")  # shape: see `shell`
    shell: bool = key(False, values.boolean, kind="command")
    env: Mapping[str, str] = key(parse=values.table_of_str, factory=dict, kind="command")
    cwd: str | None = key(None, values.plain, kind="command")
    ok_exit_codes: tuple[int, ...] = key((0,), values.list_of(values.int_in(0, 255), False), kind="command")
    warning_exit_codes: tuple[int, ...] = key((), values.list_of(values.int_in(0, 255)), kind="command")
    checks: tuple[Check, ...] = key((), _same, kind="checks")
    http: HttpSettings = key(parse=values.table, factory=HttpSettings)
    # Its table and the [daemon] / [http] defaults as written (${VAR} unexpanded), hashed:
    # whether a running daemon has this job as the config file now says.
    digest: str = field(default="", compare=False)

    def zone(self):
        """The tzinfo of this job's cron schedule."""
        from beaconlite.cron import resolve_timezone

        return resolve_timezone(self.timezone)


@dataclass(frozen=True)
class NotifySpec:
    url: str | None = key(None)
    command: tuple[str, ...] | None = key(None, values.list_of(values.string, False))
    on: tuple[str, ...] = key(
        (statuses.ERROR, statuses.TIMEOUT, statuses.RECOVERED), values.list_of(values.choice(*NOTIFY_ON))
    )
    jobs: tuple[str, ...] = key(("*",), values.list_of(values.string))


@dataclass(frozen=True)
class DaemonSettings:
    database: Database = key(parse=values.plain, factory=default_database)
    python_path: tuple[str, ...] = key((), values.list_of(values.plain))
    timezone: str = key("local", values.timezone)
    log_level: str = key("info", values.choice("debug", "info", "warning", "error"))
    log_format: str = key("auto", values.choice("text", "json", "auto"))
    default_timeout: float = key(1800.0, values.duration)
    heartbeat_interval: float = key(5.0, values.duration)
    reaper_interval: float = key(60.0, values.duration)
    orphan_after: float = key(120.0, values.duration)
    abort_grace: float = key(10.0, values.duration)
    max_concurrent_runs: int = key(8, values.int_in(1, 10000))
    on_stop: str = key("cancel", values.choice("cancel", "finish"))
    keep_history: float = key(90 * 86400.0, parse_duration)  # 0 = keep everything
    group_access: bool = key(False, values.boolean)
    max_leaked_threads: int = key(4, values.int_in(1, 10000))
    max_connections: int = key(10, values.int_in(2, 1000))  # PostgreSQL only: the pool per node


@dataclass(frozen=True)
class WebSettings:
    listen: str = key("", values.listen)  # "HOST:PORT"; empty: no endpoint
    token: str = key("")  # required when listen is set; a secret

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Config:
    path: Path | None
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    jobs: tuple[JobSpec, ...] = ()
    notify: tuple[NotifySpec, ...] = ()
    web: WebSettings = field(default_factory=WebSettings)
    secrets: frozenset[str] = frozenset()  # every ${ENV} value: redacted wherever we write

    def job(self, name: str) -> JobSpec | None:
        return self._by_name.get(name)

    @functools.cached_property
    def _by_name(self) -> dict[str, JobSpec]:  # every fire looks its job up: not a walk of 10,000
        return {j.name: j for j in self.jobs}


DAEMON = keys(DaemonSettings)
HTTP = keys(HttpSettings)
JOB = keys(JobSpec)
CHECK = keys(Check)
NOTIFY = keys(NotifySpec)
KIND_KEYS = {
    kind: {f.name for f in fields(JobSpec) if f.metadata.get("kind") == kind}
    for kind in ("python", "command", "checks")
}
WEB = keys(WebSettings)
TOP_KEYS = ("daemon", "http", "jobs", "notify", "web")
PATH_KEYS = ("database", "python_path")  # [daemon] paths: ${VAR} in them is no secret (SPEC 2)


# -- the loader ---------------------------------------------------------------------------


class _Loader:
    def __init__(self, path: Path, env: Mapping[str, str], env_required: bool):
        self.path = path
        self.env = env
        self.env_required = env_required
        self.secrets: set[str] = set()

    def fail(self, where: str, message: str):
        # A value from ${ENV} may be quoted in the message: it is a secret like any other.
        raise ConfigError(Redactor(self.secrets)(f"{self.path}: {where}: {message}"))

    def interpolate(self, value, where: str, secret: bool = True):
        """Replace ${NAME} in every string, remembering each value as a secret (but for the
        paths of [daemon]: ${STATE_DIRECTORY}/b.db must stay usable in a unit file)."""
        if isinstance(value, str):

            def sub(m):
                name = m.group(1)
                if name not in self.env:
                    if not self.env_required:
                        return ""
                    self.fail(where, f"environment variable {name} is not set (used as ${{{name}}})")
                if self.env[name] and secret:
                    self.secrets.add(self.env[name])
                return self.env[name]

            return ENV_REF.sub(sub, value)
        if isinstance(value, list):
            return [self.interpolate(v, f"{where}[{i}]", secret) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.interpolate(v, f"{where}.{k}", secret) for k, v in value.items()}
        return value

    def section(self, raw, keys: Mapping[str, Callable], where: str) -> dict:
        """Check a table's keys and parse each value; return {key: clean value}."""
        if not isinstance(raw, dict):
            self.fail(where, f"expected a table, got {values.type_name(raw)}")
        clean = {}
        for key, value in raw.items():
            if key not in keys:
                close = _close_match(key, keys)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                self.fail(where, f'unknown key "{key}"{hint}')
            try:
                # A password in a PostgreSQL URL is a secret; a path is not.
                path = where == "[daemon]" and key in PATH_KEYS and not _names_postgres(value)
                clean[key] = keys[key](self.interpolate(value, f"{where}.{key}", secret=not path))
            except ValueError as e:
                self.fail(where, f'key "{key}": {e}')
        return clean

    def load(self, text: str) -> Config:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            self.fail("invalid TOML", str(e))
        for key in data:
            if key not in TOP_KEYS:
                close = _close_match(key, TOP_KEYS)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                self.fail("top level", f'unknown section "{key}"{hint}')
        self.defaults_as_written = json.dumps(
            [data.get("daemon"), data.get("http")], sort_keys=True, default=str
        )
        daemon = self.section(data.get("daemon", {}), DAEMON, "[daemon]")
        base = self.path.parent
        try:
            daemon["database"] = (
                database_location(daemon["database"], base) if "database" in daemon else default_database()
            )
        except ValueError as e:
            self.fail("[daemon]", f'key "database": {e}')
        daemon["python_path"] = tuple(str((base / p).absolute()) for p in daemon.get("python_path", ()))
        daemon_settings = DaemonSettings(**daemon)
        http = HttpSettings(**self.section(data.get("http", {}), HTTP, "[http]"))

        raw_jobs = data.get("jobs", [])
        if not isinstance(raw_jobs, list):
            self.fail("jobs", "expected [[jobs]] tables")
        jobs, names = [], set()
        for index, raw in enumerate(raw_jobs):
            job = self.job(raw, index, daemon_settings, http)
            if job.name in names:
                self.fail(f'job "{job.name}"', "duplicate job name")
            names.add(job.name)
            jobs.append(job)

        raw_notify = data.get("notify", [])
        if not isinstance(raw_notify, list):
            self.fail("notify", "expected [[notify]] tables")
        notify = []
        for index, raw in enumerate(raw_notify):
            where = f"[[notify]] #{index + 1}"
            spec = self.section(raw, NOTIFY, where)
            if ("url" in spec) == ("command" in spec):
                self.fail(where, 'needs exactly one of "url" or "command"')
            notify.append(NotifySpec(**spec))
        web = WebSettings(**self.section(data.get("web", {}), WEB, "[web]"))
        if web.listen and not web.token:
            self.fail(
                "[web]", 'key "token": required when "listen" is set (every path but /healthz needs it)'
            )
        if web.token:
            self.secrets.add(web.token)
        return Config(
            self.path, daemon_settings, http, tuple(jobs), tuple(notify), web, frozenset(self.secrets)
        )

    def job(self, raw, index: int, daemon: DaemonSettings, http: HttpSettings) -> JobSpec:
        name = raw.get("name") if isinstance(raw, dict) else None
        where = f'job "{name}"' if isinstance(name, str) else f"jobs[{index}]"
        spec = self.section(raw, JOB, where)
        if "name" not in spec:
            self.fail(where, 'key "name" is missing')
        if not JOB_NAME.fullmatch(spec["name"]):
            self.fail(where, 'key "name": only letters, digits, "_", "." and "-" are allowed')
        kinds = [
            k for k, key in (("python", "run"), ("command", "command"), ("checks", "checks")) if key in spec
        ]
        if len(kinds) != 1:
            self.fail(
                where,
                'needs exactly one of "run", "command" or "checks"'
                + (f" (has {', '.join(repr(k) for k in kinds)})" if kinds else ""),
            )
        kind = kinds[0]
        for key in spec:
            for other, owned in KIND_KEYS.items():
                if key in owned and other != kind:
                    self.fail(where, f'key "{key}" only applies to {other} jobs')
        spec.setdefault("timeout", daemon.default_timeout)
        spec.setdefault("timezone", daemon.timezone)
        spec["http"] = HttpSettings(
            **{**http.__dict__, **self.section(raw.get("http", {}), HTTP, f"{where} [jobs.http]")}
        )
        if kind == "python" and not re.fullmatch(r"[\w.]+:[\w.]+", spec["run"]):
            self.fail(where, f'key "run": {spec["run"]!r} is not "module.path:function"')
        if kind == "command":
            spec["command"] = self.command(spec["command"], spec.get("shell", False), where)
        if kind == "checks":
            raw_checks = raw["checks"]  # raw: section() interpolates each check itself
            if not isinstance(raw_checks, list) or not raw_checks:
                self.fail(where, 'key "checks": expected one or more [[jobs.checks]] tables')
            spec["checks"] = tuple(self.check(c, f"{where} checks[{i}]") for i, c in enumerate(raw_checks))
        written = self.defaults_as_written + json.dumps(raw, sort_keys=True, default=str)
        return JobSpec(kind=kind, digest=hashlib.sha256(written.encode()).hexdigest()[:16], **spec)

    def command(self, value, shell: bool, where: str):
        if shell:
            if not isinstance(value, str) or not value.strip():
                self.fail(where, 'key "command": with shell = true, a non-empty string')
            return value
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(a, str) for a in value)
            or not value[0]
        ):
            self.fail(
                where,
                'key "command": expected an argv array of strings, e.g. '
                '["/usr/local/bin/backup.sh", "--full"] (or a string with shell = true)',
            )
        return tuple(value)

    def check(self, raw, where: str) -> Check:
        spec = self.section(raw, CHECK, where)
        if "url" not in spec:
            self.fail(where, 'key "url" is missing')
        parts = urlsplit(spec["url"])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.fail(where, f'key "url": {spec["url"]!r} is not an http(s) URL')
        if "body" in spec and "json" in spec:
            self.fail(where, 'keys "body" and "json" exclude each other')
        if "name" not in spec:
            # The URL without its query string (and never its credentials).
            netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
            spec["name"] = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        return Check(**spec)


def _names_postgres(value) -> bool:
    return isinstance(value, str) and value.split(":", 1)[0] in PostgresURL.SCHEMES


def daemon_database_as_written(path: Path) -> str:
    """The `[daemon] database` of a config that is valid TOML but may fail validation
    ("" when it names none); ConfigError when even that cannot be read."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None
    loader = _Loader(path, os.environ, env_required=False)
    daemon = data.get("daemon") if isinstance(data.get("daemon"), dict) else {}
    try:
        value = daemon.get("database", "")
        return values.plain(loader.interpolate(value, "[daemon].database", secret=not _names_postgres(value)))
    except ValueError as e:
        raise ConfigError(f'{path}: [daemon]: key "database": {e}') from None


def _close_match(key: str, known) -> list[str]:
    import difflib  # only for a config with an unknown key: not on every query's path

    return difflib.get_close_matches(key, known, n=1, cutoff=0.6)


def load_config(
    path: str | os.PathLike, env: Mapping[str, str] | None = None, env_required: bool = True
) -> Config:
    """Read and validate a config file; ConfigError (one line) on any problem.

    ``env_required=False`` reads an unset ${VAR} as empty: query commands need job names
    and the database, not the secrets an administrator's shell does not have.
    """
    path = Path(path)
    if values.control_character(str(path.absolute())) is not None:
        raise ConfigError(f"{str(path)!r}: a config path may not hold a control character")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    return _Loader(path, os.environ if env is None else env, env_required).load(text)
