"""The values of config keys: each parser takes the raw TOML value and returns the clean
one, or raises ValueError with a message fit for a user (the loader adds file, job and key)."""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable

from beaconlite.durations import parse_duration


def type_name(value) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def of_type(expected: type, what: str) -> Callable:
    def parse(v):
        if not isinstance(v, expected):
            raise ValueError(f"expected {what}, got {type_name(v)}")
        return v

    return parse


boolean = of_type(bool, "true or false")
string = of_type(str, "a string")
table = of_type(dict, "a table")


def control_character(text: str) -> str | None:
    """The first control character (or line separator) in ``text``, or None."""
    return next((c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)


def plain(v):
    """A path or a name: it may land in a systemd unit or a plist, where a control
    character (a newline above all) would be syntax, never data."""
    found = control_character(string(v))
    if found is not None:
        raise ValueError(f"holds a control character ({found!r}); paths and names may not")
    return v


def duration(v):
    seconds = parse_duration(v)
    if seconds <= 0:
        raise ValueError(f"{v!r} must be > 0")
    return seconds


def int_in(low: int, high: int):
    def parse(v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"expected an integer, got {type_name(v)}")
        if not low <= v <= high:
            raise ValueError(f"{v} is out of range {low}..{high}")
        return v

    return parse


def rate(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number in [0, 1], got {type_name(v)}")
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{v} is out of range [0, 1]")
    return float(v)


def choice(*options: str):
    def parse(v):
        if v not in options:
            raise ValueError(f"{v!r} is not one of {', '.join(repr(o) for o in options)}")
        return v

    return parse


def list_of(item: Callable, allow_empty: bool = True):
    def parse(v):
        if not isinstance(v, list):
            raise ValueError(f"expected an array, got {type_name(v)}")
        if not v and not allow_empty:
            raise ValueError("must not be empty")
        return tuple(item(x) for x in v)

    return parse


def table_of_str(v):
    if not isinstance(v, dict):
        raise ValueError(f"expected a table, got {type_name(v)}")
    for k, x in v.items():
        if not isinstance(x, str):
            raise ValueError(f"{k}: expected a string, got {type_name(x)}")
    return dict(v)


def schedule(v):
    _fires_at_all(string(v))
    return v.strip(" \t")


@functools.lru_cache(maxsize=1024)
def _fires_at_all(text: str) -> None:
    """ValueError unless ``text`` parses and fires within the search horizon: checked once
    per distinct schedule (10,000 jobs often share a handful of them)."""
    from beaconlite.cron import parse_schedule, probe
    from beaconlite.errors import ScheduleError

    try:
        probe(parse_schedule(text))
    except ScheduleError as e:
        raise ValueError(str(e)) from None


def timezone(v):
    string(v)
    if v != "local":
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(v)
        except (ValueError, OSError, LookupError):
            raise ValueError(f'unknown time zone {v!r} (e.g. "UTC", "Europe/Berlin", "local")') from None
    return v


def listen(v):
    """ "HOST:PORT" for the web endpoint ("[::1]:9470" for IPv6); "" for none."""
    text = string(v).strip()
    if not text:
        return ""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'{text!r} is not "HOST:PORT" (e.g. "127.0.0.1:9470")')
    if control_character(host) or any(c.isspace() or c in "/?#@" for c in host):
        raise ValueError(f"{text!r} has no usable host")
    return text


def expect_status(v):
    code = int_in(100, 599)
    return (code(v),) if not isinstance(v, list) else list_of(code, False)(v)
