"""Durations ("1h30m", "250ms", 90) and sizes ("50MB", "50MiB", 1024), as users write them."""

from __future__ import annotations

import re

MAX_DURATION = 365 * 86400.0
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_duration(value) -> float:
    """Seconds for "30s", "1h30m", "250ms", or a plain number; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            pos, seconds = 0, 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(f'bad duration {value!r} (e.g. "250ms", "30s", "15m", "1h30m", "1d")')
    else:
        raise ValueError(f'bad duration {value!r}: a string like "30s" or a number of seconds')
    if seconds != seconds or seconds < 0:
        raise ValueError(f"bad duration {value!r}: must be >= 0")
    if seconds > MAX_DURATION:
        raise ValueError(f"duration {value!r} is longer than 365 days")
    return seconds


def parse_size(value) -> int:
    """Bytes for "512KB" (powers of 1000), "50MiB" (powers of 1024), or a number."""
    if isinstance(value, bool):
        raise ValueError(f"bad size {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.fullmatch(value.strip())):
        size = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
    else:
        raise ValueError(f'bad size {value!r} (e.g. "512KB", "50MB", "50MiB", or bytes)')
    if size <= 0 or size > 2**53:
        raise ValueError(f"size {value!r} is out of range")
    return size


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
