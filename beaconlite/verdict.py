"""A run's verdict: its status and the texts of its record, from whatever the job did.

Job code is hostile by assumption: an exception's ``__str__`` may raise or block, a summary
may not be JSON, or be huge, or hold lone surrogates. Nothing here ever raises, and nothing
runs job code without a time bound: plain values (builtin exceptions, JSON-native trees) are
handled directly; anything else is described on a helper thread that is abandoned if it
does not answer within ``timing.DESCRIBE_TIMEOUT``.
"""

from __future__ import annotations

import json
import os
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beaconlite import timing
from beaconlite.errors import RunAborted, StepFailed
from beaconlite.process import last_bytes
from beaconlite.redaction import Redactor, scrub
from beaconlite.statuses import ERROR, OK, RUNNING, SUCCESS, WARNING

SUMMARY_LIMIT = 64 * 1024  # bytes of JSON (SPEC 3)
_PLAIN = (str, int, float, bool, type(None))


@dataclass
class StepRecord:
    """One step as the run knows it; ``row_id`` is None while its row could not be written."""

    name: str
    status: str = RUNNING
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    row_id: int | None = None
    written: bool = False  # the row holds this record's final state

    def as_row(self) -> dict:
        return {
            "id": self.row_id,
            "name": self.name,
            "status": self.status,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


@dataclass
class Findings:
    """What a run found, kept in memory for the verdict (the rows mirror it when they can)."""

    steps: list[StepRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # ctx.warn() outside any step
    tracebacks: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    """How a run ended, kept until its row says so."""

    status: str
    error: str | None = None
    summary: str | None = None  # JSON text
    output: str | None = None
    finished_at: float = 0.0
    duration_s: float | None = None
    suspended_s: float | None = None
    steps: list[dict] = field(default_factory=list)  # step rows the database refused so far


def decide(
    job,
    aborted: RunAborted | None,
    failure: BaseException | None,
    summary: Any,
    findings: Findings,
    output: str | None,
    redact: Redactor,
) -> tuple[str, str | None, str | None, str | None]:
    """(status, error, summary JSON, output) of a run whose work has ended; every text but
    the error line (which the caller folds) is redacted here, before anything is cut.

    The abort's reason decides first; then the job's own exception (a RunAborted it raised
    itself, with no abort pending, is an ordinary error); then the steps.
    """
    summary_text, summary_problem = summary_json(summary, redact)
    if aborted is not None:
        status, error = aborted.status, aborted.reason
    elif failure is not None:
        status = ERROR
        error, trace = describe_exception(failure)
        findings.tracebacks.append(redact(trace))
    else:
        status, error = from_steps(findings, job.min_success_rate)
        if summary_problem:
            error = summary_problem if error is None else f"{error}; {summary_problem}"
            if status == SUCCESS:
                status = WARNING
    if job.kind != "command":  # what it wrote, then the tracebacks of its failures
        parts = [output.rstrip("\n") if output else None, *findings.tracebacks]
        output = last_bytes("\n".join(t for t in parts if t)) or None
    return status, error, summary_text, output


def from_steps(findings: Findings, min_success_rate: float) -> tuple[str, str | None]:
    """The run's status from its ended steps (SPEC section 3) and its error line."""
    steps = findings.steps
    if not steps:
        return (WARNING, None) if findings.warnings else (SUCCESS, None)
    ok = sum(1 for s in steps if s.status in OK)
    failed = [s for s in steps if s.status not in OK]
    rate = ok / len(steps)
    first = f": {failed[0].name}: {failed[0].error}" if failed and failed[0].error else ""
    if rate < min_success_rate:
        return ERROR, f"{len(failed)} of {len(steps)} steps failed{first}"
    if failed:
        return WARNING, (
            f"{len(failed)} of {len(steps)} steps failed (success rate "
            f"{rate:.2f} >= {min_success_rate:g}){first}"
        )
    if findings.warnings or any(s.status == WARNING for s in steps):
        return WARNING, None
    return SUCCESS, None


# -- bounded calls into job code ------------------------------------------------------------


def bounded(fn: Callable[[], Any], timeout: float | None = None) -> tuple[bool, Any]:
    """(True, fn()) or (False, why not): fn raised, blocked too long, or no thread could start."""
    timeout = timing.DESCRIBE_TIMEOUT if timeout is None else timeout
    box: dict[str, Any] = {}

    def work():
        try:
            box["value"] = fn()
        except BaseException as e:  # the job's code: anything at all
            box["error"] = e

    try:
        thread = threading.Thread(target=work, name="describe", daemon=True)
        thread.start()
    except RuntimeError as e:
        return False, f"cannot start a thread: {e}"
    thread.join(timeout)
    if thread.is_alive():
        return False, f"it did not answer within {timeout:g}s"
    if "error" in box:
        return False, f"it raised {type_name(box['error'])}"
    return True, box["value"]


def type_name(obj: Any) -> str:
    try:
        name = type(obj).__name__
        return name if isinstance(name, str) else "?"
    except BaseException:
        return "?"


def _plain_exception(e: BaseException) -> bool:
    """A builtin exception with plain arguments and no chain: describing it runs no job code."""
    return (
        type(e).__module__ == "builtins"
        and all(type(a) in _PLAIN for a in e.args)
        and e.__cause__ is None
        and e.__context__ is None
    )


_OURS = str(Path(__file__).resolve().parent) + os.sep


def _job_frames(tb):
    """The traceback from the job's own first frame on (beaconlite's runner and kinds call
    it: those frames tell the job's author nothing); all of it if no frame is the job's."""
    first = tb
    while first is not None and first.tb_frame.f_code.co_filename.startswith(_OURS):
        first = first.tb_next
    return first or tb


def _http_line(e: BaseException) -> str | None:
    """A failed request in the words of its cause, not urllib3's internals."""
    if type(e).__module__.split(".")[0] not in ("requests", "urllib3"):
        return None
    from beaconlite.http import describe  # requests is loaded already: it raised this

    return describe(e)


def describe_exception(e: BaseException) -> tuple[str, str]:
    """(one error line, the traceback text) for an exception out of job code."""

    def build() -> tuple[str, str]:
        text = str(e) if isinstance(e, StepFailed) else _http_line(e) or f"{type(e).__name__}: {e}"
        return text, "".join(traceback.format_exception(type(e), e, _job_frames(e.__traceback__)))

    if _plain_exception(e):
        ok, value = True, build()
    else:
        ok, value = bounded(build)
    if ok and isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return scrub(value[0]), scrub(value[1])
    why = value if not ok else "it did not produce text"
    try:  # the frames alone call no job code
        frames = "".join(traceback.format_tb(e.__traceback__))
    except BaseException:
        frames = ""
    return f"the job's exception could not be described ({type_name(e)}: {why})", scrub(frames)


# -- summaries ----------------------------------------------------------------------------


class _NotJSON(Exception):
    pass


def _json_tree(value: Any, redact: Redactor, depth: int = 0) -> Any:
    """A redacted copy of ``value`` if it is JSON-native (exact types only: no job code runs)."""
    if depth > 100:
        raise _NotJSON("it is nested more than 100 levels deep")
    kind = type(value)
    if kind is str:
        return redact(value)
    if kind is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise _NotJSON(f"it holds the number {value!r}")
        return value
    if kind in (int, bool, type(None)):
        return value
    if kind in (list, tuple):
        return [_json_tree(v, redact, depth + 1) for v in value]
    if kind is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _NotJSON(f"a key is {type_name(k)}, not a string")
            out[redact(k)] = _json_tree(v, redact, depth + 1)
        return out
    raise _NotJSON(f"it holds {type_name(value)}")


def summary_json(value: Any, redact: Redactor) -> tuple[str | None, str | None]:
    """(JSON text to store, or None; why it is not the summary as returned, or None).

    Every string in it is redacted before it is encoded or cut. A summary that is not JSON
    or is over 64 KiB is stored as a truncated representation (a JSON string), and the
    reason makes the run a warning (SPEC section 3).
    """
    if value is None:
        return None, None
    try:
        text = json.dumps(_json_tree(value, redact), ensure_ascii=False, allow_nan=False)
        problem = None
    except _NotJSON as e:
        ok, rendered = bounded(lambda: repr(value))
        text = redact(rendered) if ok and isinstance(rendered, str) else f"<{type_name(value)}>"
        problem = f"the summary is not JSON ({e}); a representation is stored"
        return json.dumps(_cut(text), ensure_ascii=False), problem
    except RecursionError:
        return json.dumps(f"<{type_name(value)}>"), "the summary is nested too deeply to store"
    size = len(text.encode("utf-8"))
    if size > SUMMARY_LIMIT:
        problem = f"the summary is {size} bytes, more than {SUMMARY_LIMIT}; a truncated copy is stored"
        return json.dumps(_cut(text), ensure_ascii=False), problem
    return text, None


def _cut(text: str) -> str:
    """A quarter of the limit in characters: even at 4 bytes each, the JSON fits."""
    limit = SUMMARY_LIMIT // 4  # a character may take 4 bytes, and escapes double some
    return text if len(text) <= limit else text[: limit - 1] + "…"
