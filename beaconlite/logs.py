"""Logging: one line per event, as text for people or JSON lines for machines.

JSON lines carry `event`, `job`, `run_id`, `status`, `duration_s` when the event has them
(passed as `extra=`), and every line goes through the config's redactor.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from beaconlite.redaction import Redactor

FIELDS = ("event", "job", "run_id", "status", "duration_s")


class _Base(logging.Formatter):
    def __init__(self, redact: Redactor):
        super().__init__()
        self.redact = redact

    def message(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return self.redact(text)


class JsonFormatter(_Base):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.message(record),
        }
        for key in FIELDS:
            if hasattr(record, key):
                line[key] = getattr(record, key)
        return json.dumps(line, default=str)


class TextFormatter(_Base):
    """For people: local time with its zone, and every line about a run names it
    ("disk-usage #42: ...")."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(record.created))
        text = self.message(record)
        job, run_id = getattr(record, "job", None), getattr(record, "run_id", None)
        if job and run_id is not None and not text.startswith(f"{job} #{run_id}"):
            text = f"{job} #{run_id}: {text}"
        return f"{stamp} {record.levelname:7} {text}"


def setup(level: str, fmt: str, redact: Redactor, stream=None) -> None:
    """Configure the `beaconlite` logger (idempotent: a reload calls it again)."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    logger = logging.getLogger("beaconlite")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
