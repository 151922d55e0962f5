"""A Python run's own output: its `ctx.log` lines, and the `print()` output and `logging`
records (INFO and above) of the run's own thread, kept with the run (SPEC section 4).

Runs share one process, so output is routed by thread: ``sys.stdout``/``sys.stderr`` are
replaced, once, by writers that send a run thread's text to that run and everything else
to the real stream; a handler on the root logger does the same for log records. Not
captured: writes to the file descriptors themselves (``os.write(1, ...)``), subprocesses the
job starts, threads the job starts, and ``contextlib.redirect_stdout`` (which replaces
``sys.stdout`` again for its block).
"""

from __future__ import annotations

import io
import logging
import sys
import threading

LIMIT = 128 * 1024  # characters kept before the redaction and the 64 KiB cut

_local = threading.local()
_install_lock = threading.Lock()


class RunOutput:
    """The end of what one run wrote, in bounded memory."""

    def __init__(self, limit: int = LIMIT):
        self.limit = limit
        self._parts: list[str] = []
        self._size = 0
        self.dropped = False  # its beginning is gone
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            self._parts.append(text)
            self._size += len(text)
            if self._size > 2 * self.limit:
                kept = "".join(self._parts)[-self.limit :]
                self._parts, self._size, self.dropped = [kept], len(kept), True

    def line(self, text: str) -> None:
        self.write(text if text.endswith("\n") else text + "\n")

    def text(self) -> str:
        with self._lock:
            return "".join(self._parts)


class _Router(io.TextIOBase):
    """sys.stdout / sys.stderr: a run thread's writes go to its run, others' to the stream."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        output = getattr(_local, "output", None)
        if output is None:
            return self._stream.write(text)
        output.write(text)
        return len(text)

    def flush(self) -> None:
        if getattr(_local, "output", None) is None:
            self._stream.flush()

    def __getattr__(self, name):  # fileno, isatty, encoding, buffer ... of the real stream
        return getattr(self._stream, name)


class _Records(logging.Handler):
    """On the root logger: a run thread's records (INFO and above) go to its run. Others at
    WARNING and above, from libraries, go to beaconlite's own log (a root handler here
    would otherwise silence Python's last-resort stderr output for them)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "beaconlite" or record.name.startswith("beaconlite."):
            return  # beaconlite's own lines (ctx.log is captured by the run itself)
        output = getattr(_local, "output", None)
        if output is not None:
            if record.levelno >= logging.INFO:
                output.line(f"{record.levelname} {record.name}: {self._message(record)}")
        elif record.levelno >= logging.WARNING and not getattr(record, "forwarded", False):
            record.forwarded = True  # once: beaconlite's logger may propagate back to the root
            logging.getLogger("beaconlite").handle(record)

    @staticmethod
    def _message(record: logging.LogRecord) -> str:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string in the job's own logging call
            text = f"{record.msg} {record.args}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        return text


def install() -> None:
    """Route output by thread from now on (idempotent: every run makes sure, since someone
    may have replaced sys.stdout since, as a test runner does)."""
    with _install_lock:
        if not isinstance(sys.stdout, _Router):
            sys.stdout = _Router(sys.stdout)
        if not isinstance(sys.stderr, _Router):
            sys.stderr = _Router(sys.stderr)
        root = logging.getLogger()
        if not any(isinstance(h, _Records) for h in root.handlers):
            root.addHandler(_Records())
            if root.level > logging.INFO:
                root.setLevel(logging.INFO)  # a job logger at its default level reaches INFO


class Capture:
    """``with Capture(output):`` around a run's work, on the run's own thread."""

    def __init__(self, output: RunOutput):
        self.output = output

    def __enter__(self) -> RunOutput:
        install()
        _local.output = self.output
        return self.output

    def __exit__(self, *exc) -> None:
        _local.output = None
