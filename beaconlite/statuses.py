"""The run and step statuses of SPEC section 3: the one list, and which are which."""

from __future__ import annotations

RUNNING = "running"  # the only status that is not terminal
SUCCESS = "success"
WARNING = "warning"
ERROR = "error"
TIMEOUT = "timeout"
CANCELLED = "cancelled"
SKIPPED = "skipped"

ALL = (RUNNING, SUCCESS, WARNING, ERROR, TIMEOUT, CANCELLED, SKIPPED)
FINISHED = (SUCCESS, WARNING, ERROR, TIMEOUT, CANCELLED)  # terminal after a start (not skipped)
OK = (SUCCESS, WARNING)  # counts toward the success rate; exit 0
ABORTED = (ERROR, TIMEOUT, CANCELLED)  # a run ending so takes its step in flight with it
OUTCOMES = (SUCCESS, WARNING, ERROR, TIMEOUT)  # what "recovered" compares
FAILURES = (ERROR, TIMEOUT)  # what `retry_on` may hold, and what a "recovered" follows
RECOVERED = "recovered"  # a notification event, not a status: an OK after an error or timeout
