"""Where the config and the database are, and whether they may be used: the config search
path, the default state directory, the database's directory, and a config that every user
can write (refused: it decides what the daemon runs)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from beaconlite.errors import ConfigError


class PostgresURL:
    """A PostgreSQL database named by URL (SPEC 11). ``str()`` is the URL with its password
    masked, so it can be logged and shown anywhere; ``url`` is for the driver alone."""

    SCHEMES = ("postgresql", "postgres")

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in self.SCHEMES or not parts.path.strip("/"):
            raise ValueError("a PostgreSQL URL is postgresql://USER@HOST:PORT/DATABASE")
        self.url = url
        netloc = parts.netloc
        if parts.password is not None:
            user, _, host = netloc.rpartition("@")
            netloc = f"{user.partition(':')[0]}:***@{host}"
        self._shown = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))

    def __str__(self) -> str:
        return self._shown

    def __repr__(self) -> str:
        return f"PostgresURL({self._shown!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, PostgresURL) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)


Database = Path | PostgresURL  # where the runs are: a SQLite file, or a PostgreSQL cluster's database


def is_postgres(database) -> bool:
    return isinstance(database, PostgresURL)


def database_location(value: str, base: Path) -> Database:
    """`[daemon] database` (or --database): a PostgreSQL URL, else a path (relative to ``base``)."""
    if value.split(":", 1)[0] in PostgresURL.SCHEMES and "://" in value:
        return PostgresURL(value)
    return (base / value).absolute()


def default_database() -> Path:
    """The platform's per-user state directory."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "beaconlite" / "beaconlite.db"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "beaconlite" / "beaconlite.db"


def config_search_path() -> list[Path]:
    found = []
    if os.environ.get("BEACONLITE_CONFIG"):
        found.append(Path(os.environ["BEACONLITE_CONFIG"]))
    found += [
        Path("beaconlite.toml"),
        Path.home() / ".config" / "beaconlite" / "config.toml",
        Path("/etc/beaconlite/config.toml"),
    ]
    return found


def find_config(explicit: str | None) -> Path | None:
    """--config, else $BEACONLITE_CONFIG, else the first existing default location."""
    if explicit:
        return Path(explicit)
    if os.environ.get("BEACONLITE_CONFIG"):
        return Path(os.environ["BEACONLITE_CONFIG"])
    return next((p for p in config_search_path() if p.is_file()), None)


def database_of(path: Path) -> Database:
    """The `[daemon] database` of a config that fails validation but is valid TOML, so a
    query can still read the history (ConfigError when even that cannot be read)."""
    from beaconlite.config import daemon_database_as_written

    value = daemon_database_as_written(path)
    return database_location(value, path.parent) if value else default_database()


def prepare_database_directory(config) -> None:
    """The database's directory, made if missing: the default state directory whole, a
    configured one only itself (a typo'd path must not grow a tree). ConfigError naming
    the key when it cannot be."""
    from beaconlite.errors import StoreError
    from beaconlite.store import ensure_directory

    settings = config.daemon
    if is_postgres(settings.database):
        return  # the server's business
    try:
        whole = settings.database == default_database()
        ensure_directory(settings.database.parent, settings.group_access, parents=whole)
    except StoreError as e:
        raise ConfigError(f'{config.path}: [daemon]: key "database": {e}') from None


def refuse_open_config(path: Path) -> None:
    """The config decides what commands run: like sshd with its keys, refuse one that every
    user can write, or that sits in a directory every user can write (unless the directory
    has the sticky bit, as /tmp does). Group write is allowed (umask 002 is common)."""
    for target, what in ((path, "config file"), (path.absolute().parent, "directory of the config file")):
        try:
            mode = target.stat().st_mode
        except OSError as e:
            raise ConfigError(f"{target}: cannot stat the {what}: {e.strerror}") from None
        sticky_dir = stat.S_ISDIR(mode) and mode & stat.S_ISVTX
        if mode & stat.S_IWOTH and not sticky_dir:
            raise ConfigError(
                f"{target}: the {what} is writable by every user (mode {stat.S_IMODE(mode):04o}); "
                f"anyone could change what the daemon runs: chmod o-w {target}"
            )
