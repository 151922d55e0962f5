"""Render and install a systemd unit or a launchd plist for *this* installation."""

from __future__ import annotations

import json
import plistlib
import re
import shutil
import sys
from pathlib import Path

from beaconlite import timing
from beaconlite.config import Config
from beaconlite.errors import BeaconError, ConfigError
from beaconlite.places import is_postgres
from beaconlite.values import control_character

LABEL = "org.beaconlite.daemon"
SERVICE_USER = "beaconlite"
SYSTEM_STATE = Path("/var/lib/beaconlite")
_PLAIN_WORD = re.compile(r"[A-Za-z0-9/_.,:+@=-]+")  # needs no quotes in a unit file
STOP_MARGIN = 15  # seconds beyond the daemon's own bound on a stop


def stop_timeout(config: Config) -> int:
    """Seconds the service manager should give a stop before it kills: longer than the
    daemon's own bound (SPEC section 5), or a slow stop would lose the ends it is writing.

    "cancel": abort_grace for the runs to end, then recording them (at most
    STOP_WRITE_WAIT). "finish": the longest deadline plus its grace (and a command's
    SIGTERM-to-SIGKILL) first.
    """
    settings = config.daemon
    runs = settings.abort_grace
    if settings.on_stop == "finish":
        longest = max((j.timeout for j in config.jobs), default=settings.default_timeout)
        runs = longest + settings.abort_grace + timing.KILL_AFTER
    return int(runs + timing.STOP_WRITE_WAIT + STOP_MARGIN + 0.999)


def _plain(value: str, what: str) -> str:
    """A value about to be rendered: a control character would be syntax (a newline adds a
    line to a unit), so it is refused (exit 2), whatever else is escaped."""
    found = control_character(value)
    if found is not None:
        raise ConfigError(
            f"{what} {value!r} holds a control character ({found!r}); it cannot go into a service file"
        )
    return value


def systemd_quote(value: str, command: bool = False) -> str:
    """One word for a unit file: as is when it is plain, else double-quoted with C escapes;
    "%" doubled (specifiers), and in a command line "$" doubled (variable expansion)."""
    text = value.replace("%", "%%")
    if command:
        text = text.replace("$", "$$")
    if _PLAIN_WORD.fullmatch(value):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def command_line(config: Config) -> list[str]:
    """The daemon's argv for this installation, each part checked."""
    argv = executable() + ["--config", str(config.path.absolute()), "daemon"]
    return [_plain(a, "the path") for a in argv]


def executable() -> list[str]:
    """The real command that starts beaconlite here."""
    script = Path(sys.executable).parent / "beaconlite"
    if script.exists():
        return [str(script.absolute())]
    found = shutil.which("beaconlite")
    return [str(Path(found).absolute())] if found else [sys.executable, "-m", "beaconlite"]


def names_database(config: Config) -> bool:
    return bool(re.search(r"(?m)^\s*database\s*=", config.path.read_text()))


def service_database(config: Config, launchd: bool, user: bool) -> Path:
    """Where the service's database will be: the config's own choice, else the system
    state directory for a system unit, else this user's default."""
    if names_database(config) or launchd or user:
        return config.daemon.database
    return SYSTEM_STATE / "beaconlite.db"


def systemd_unit(config: Config, user: bool) -> str:
    exec_start = " ".join(systemd_quote(a, command=True) for a in command_line(config))
    watchdog = 30
    lines = [
        "[Unit]",
        "Description=beaconlite integrity-run scheduler",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={exec_start}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=5s",
        "# exit code 2 is a bad config: restarting would only fail again",
        "RestartPreventExitStatus=2",
        f"WatchdogSec={watchdog}s",
        f"TimeoutStopSec={stop_timeout(config)}s",
        "# SIGTERM to the daemon only: it stops its runs' process groups itself",
        "KillMode=mixed",
    ]
    if user:
        lines += ["NoNewPrivileges=yes", "", "[Install]", "WantedBy=default.target", ""]
        return "\n".join(lines)
    lines += [
        f"User={SERVICE_USER}",
        f"Group={SERVICE_USER}",
        "# /var/lib/beaconlite, 2770 + UMask 0007 + group_access = true: administrators in the",
        "# beaconlite group can run `beaconlite status` against the service's database",
        "StateDirectory=beaconlite",
        "StateDirectoryMode=2770",
        "UMask=0007",
    ]
    database = service_database(config, False, user)
    database_dir = None if is_postgres(database) else database.parent  # a server's, not a path here
    if database_dir is not None and database_dir != SYSTEM_STATE:
        lines.append(f"ReadWritePaths={systemd_quote(_plain(str(database_dir), 'the database directory'))}")
    lines += [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def launchd_plist(config: Config, user: bool) -> str:
    logs = (Path.home() / "Library" / "Logs" if user else Path("/Library/Logs")) / "beaconlite.log"
    plist = {
        "Label": LABEL,
        "ProgramArguments": command_line(config),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # restart after a crash, not after a stop
        "ProcessType": "Standard",
        "StandardOutPath": str(logs),
        "StandardErrorPath": str(logs),
        "ExitTimeOut": stop_timeout(config),
    }
    return plistlib.dumps(plist).decode()


def target(launchd: bool, user: bool) -> Path:
    if launchd:
        base = Path.home() / "Library" / "LaunchAgents" if user else Path("/Library/LaunchDaemons")
        return base / f"{LABEL}.plist"
    if user:
        return Path.home() / ".config" / "systemd" / "user" / "beaconlite.service"
    return Path("/etc/systemd/system/beaconlite.service")


def next_step(launchd: bool, user: bool, path: Path) -> str:
    if launchd:
        domain = "gui/$(id -u)" if user else "system"
        return f"launchctl bootstrap {domain} {path}"
    if user:
        return "systemctl --user daemon-reload && systemctl --user enable --now beaconlite"
    return "systemctl daemon-reload && systemctl enable --now beaconlite"


def pin_database(config: Config, database: Path) -> bool:
    """Write `database` into the config file when it does not name one; True if it did."""
    if names_database(config) or is_postgres(database):
        return False
    text = config.path.read_text()
    # A TOML basic string (JSON's escapes are TOML's); paths hold no control characters.
    line = f"database = {json.dumps(str(database))}  # written by `beaconlite service install`\n"
    header = re.search(r"(?m)^\[daemon\][ \t]*\n", text)
    if header:  # the first key of the existing [daemon] table
        text = text[: header.end()] + line + text[header.end() :]
    else:
        text = "[daemon]\n" + line + "\n" + text
    config.path.write_text(text)
    return True


def install(config: Config, launchd: bool, user: bool, force: bool) -> tuple[list[str], list[str]]:
    """Write the unit or plist; (what was done and what to do next, warnings)."""
    from beaconlite.config import load_config

    path = target(launchd, user)
    if path.exists() and not force:
        raise BeaconError(f"{path} exists; use --force to overwrite it")
    database = service_database(config, launchd, user)
    done = []
    if pin_database(config, database):
        done.append(f"wrote database = {database} into {config.path} (a service's state directory differs)")
        config = load_config(config.path)
    text = launchd_plist(config, user) if launchd else systemd_unit(config, user)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as e:
        raise BeaconError(f"cannot write {path}: {e.strerror} (run as root, or use --user)") from None
    return done + [f"wrote {path}", f"next: {next_step(launchd, user, path)}"], warnings(
        config, launchd, user
    )


# -- what would keep a rendered unit from working ----------------------------------------------

HIDDEN = {"PrivateTmp=yes": ("/tmp", "/var/tmp"), "ProtectHome=yes": ("/home", "/root", "/run/user")}


def warnings(config: Config, launchd: bool, user: bool) -> list[str]:
    """One line per reason the rendered unit cannot work as written (SPEC sections 8, 9)."""
    if launchd:
        return []
    found = []
    paths = {
        "the beaconlite executable": Path(command_line(config)[0]),
        "the config": config.path.absolute(),
    }
    if not is_postgres(config.daemon.database):
        paths["the database"] = service_database(config, False, user)
    if user:
        return found + _linger_warnings()
    for what, path in paths.items():
        for setting, prefixes in HIDDEN.items():
            hidden = next((p for p in prefixes if str(path) == p or str(path).startswith(p + "/")), None)
            if hidden:
                found.append(f"{what} {path} is under {hidden}, which the unit hides ({setting})")
    found += _service_user_warnings(config.path.absolute())
    return found


def _service_user_warnings(config_path: Path) -> list[str]:
    import pwd

    try:
        account = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        add = f"useradd --system --user-group --no-create-home {SERVICE_USER}"
        return [f"there is no user {SERVICE_USER!r} for the unit's User= ({add})"]
    found = []
    try:
        owner = config_path.stat().st_uid
    except OSError:
        return found
    if owner not in (0, account.pw_uid):
        found.append(
            f"the config {config_path} is owned by uid {owner}, not root or {SERVICE_USER}: "
            "whoever owns it decides what the service runs"
        )
    if not _can_read(config_path, account):
        found.append(f"user {SERVICE_USER!r} cannot read the config {config_path}")
    return found


def _can_read(path: Path, account) -> bool:
    """Whether a user (not root) may read ``path``: execute on every directory, read on it."""
    import os

    groups = {account.pw_gid} | {g.gr_gid for g in _groups() if account.pw_name in g.gr_mem}
    for item, bit in [(p, 0o1) for p in reversed(path.parents)] + [(path, 0o4)]:
        try:
            st = os.stat(item)
        except OSError:
            return False
        mode = st.st_mode
        if st.st_uid == account.pw_uid:
            allowed = mode >> 6
        elif st.st_gid in groups:
            allowed = mode >> 3
        else:
            allowed = mode
        if not allowed & bit:
            return False
    return True


def _groups() -> list:
    import grp

    return grp.getgrall()


def _linger_warnings() -> list[str]:
    import getpass

    name = getpass.getuser()
    if Path("/var/lib/systemd/linger", name).exists():
        return []
    return [f"without lingering the user unit stops when {name} logs out: loginctl enable-linger {name}"]
