"""Durations ("1h30m", "250ms", 90), sizes ("50MB", "50MiB", 1024) and points in time
("2026-11-24T08:00"), as users write them.

Parsed as exact decimals ("1.001s" is 1001 ms, never a float's neighbour) and in ASCII only:
Python would read Arabic-Indic or full-width digits as numbers, a user's config should not.
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo
from decimal import Decimal

MAX_DURATION = Decimal(365 * 86400)
MAX_DIGITS = 15  # longer numbers are out of range, said plainly (not Python's digit limit)
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d|w)", re.ASCII)
_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600),
          "d": Decimal(86400), "w": Decimal(604800)}  # fmt: skip
_SIZE = re.compile(rf"({_NUMBER}) *([KMGT]i?B|B)?", re.ASCII | re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip
_EXAMPLES = '(e.g. "250ms", "30s", "15m", "1h30m", "1d", "1w")'


def exact_duration(value) -> Decimal:
    """Seconds, exactly, for "30s", "1h30m", "250ms", "1.001s" or a plain number."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}")
    if isinstance(value, int):
        seconds = Decimal(value)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"bad duration {value!r}")
        seconds = Decimal(repr(value))  # the number as written in the TOML file
    elif isinstance(value, str):
        text = value.strip(" \t")
        if any(len(n) > MAX_DIGITS for n in re.findall(r"[0-9]+", text, re.ASCII)):
            raise ValueError(f"duration {_short(value)} is out of range (at most 365 days)")
        if re.fullmatch(_NUMBER, text, re.ASCII):
            seconds = Decimal(text)
        else:
            pos, seconds = 0, Decimal(0)
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += Decimal(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(f"bad duration {_short(value)} {_EXAMPLES}")
    else:
        raise ValueError(f'bad duration {_short(value)}: a string like "30s" or a number of seconds')
    if seconds < 0:
        raise ValueError(f"bad duration {_short(value)}: must be >= 0")
    if seconds > MAX_DURATION:
        raise ValueError(f"duration {_short(value)} is longer than 365 days")
    return seconds


def parse_duration(value) -> float:
    """Seconds for "30s", "1h30m", "250ms", or a plain number; ValueError otherwise."""
    return float(exact_duration(value))


def duration_ms(value) -> int:
    """A duration as a whole number of milliseconds; ValueError for a fraction of one."""
    ms = exact_duration(value) * 1000
    if ms != ms.to_integral_value():
        raise ValueError(f"{_short(value)} is not a whole number of milliseconds")
    return int(ms)


def parse_size(value) -> int:
    """Bytes for "512KB" (powers of 1000), "50MiB" (powers of 1024), or a number."""
    if isinstance(value, bool):
        raise ValueError(f"bad size {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and len(value) < 40 and (m := _SIZE.fullmatch(value.strip(" \t"))):
        size = int(Decimal(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
    else:
        raise ValueError(f'bad size {_short(value)} (e.g. "512KB", "50MB", "50MiB", or bytes)')
    if size <= 0 or size > 2**53:
        raise ValueError(f"size {_short(value)} is out of range")
    return size


def parse_when(text: str, tz: tzinfo) -> float:
    """Epoch seconds for "2026-11-24", "2026-11-24T08:00", "2026-11-24 08:00:30" (read in
    ``tz``) or the same with an offset or "Z"; ValueError otherwise."""
    value = text.strip(" \t")
    if not value.isascii() or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.+\-Z]+)?", value):
        raise ValueError(f'bad date/time {_short(text)} (e.g. "2026-11-24" or "2026-11-24T08:00")')
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"bad date/time {_short(text)}") from None
    return (when if when.tzinfo else when.replace(tzinfo=tz)).timestamp()


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "...'"


def format_duration(seconds: float) -> str:
    """A short human form: 250ms, 1.50s, 42s, 5m10s, 3h02m, 2d04h."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)  # 7199.999 s (two clocks read apart) is 2h00m
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"
