"""Where the config and the database are, and whether they may be used: the config search
path, the default state directory, the database's directory, and a config that every user
can write (refused: it decides what the daemon runs)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from beaconlite.errors import ConfigError


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


def database_of(path: Path) -> Path:
    """The `[daemon] database` of a config that fails validation but is valid TOML, so a
    query can still read the history (ConfigError when even that cannot be read)."""
    from beaconlite.config import daemon_database_as_written

    value = daemon_database_as_written(path)
    return (path.parent / value).absolute() if value else default_database()


def prepare_database_directory(config) -> None:
    """The database's directory, made if missing: the default state directory whole, a
    configured one only itself (a typo'd path must not grow a tree). ConfigError naming
    the key when it cannot be."""
    from beaconlite.errors import StoreError
    from beaconlite.store import ensure_directory

    settings = config.daemon
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
