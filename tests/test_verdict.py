"""The verdict: status from steps, and texts from job objects that may be hostile."""

from __future__ import annotations

import json
import time

import jobs
import pytest

from beaconlite import timing
from beaconlite.redaction import Redactor
from beaconlite.verdict import SUMMARY_LIMIT, describe_exception, summary_json


def raised(e: BaseException) -> BaseException:
    try:
        raise e
    except BaseException as caught:
        return caught


def test_plain_exception_is_described_with_its_traceback():
    line, trace = describe_exception(raised(ValueError("boom")))
    assert line == "ValueError: boom" and "Traceback" in trace and "boom" in trace


def test_exception_whose_str_raises_is_still_described():
    line, _ = describe_exception(raised(jobs.Undescribable()))
    assert line.startswith("the job's exception could not be described")
    assert "Undescribable" in line and "RuntimeError" in line


def test_exception_whose_str_blocks_is_abandoned_in_bounded_time(monkeypatch):
    monkeypatch.setattr(timing, "DESCRIBE_TIMEOUT", 0.2)
    t0 = time.monotonic()
    line, _ = describe_exception(raised(jobs.BlocksWhenDescribed()))
    assert time.monotonic() - t0 < 1.0
    assert "could not be described" in line and "did not answer" in line


def test_lone_surrogates_become_escapes():
    line, _ = describe_exception(raised(ValueError("x\udcffy")))
    assert line == "ValueError: x\\udcffy"
    line.encode("utf-8")  # storable


@pytest.mark.parametrize(
    "value,problem",
    [
        ({"a": [1, 2.5, None, True]}, None),
        ((1, 2), None),  # a tuple is a JSON array
        ({(1, 2): 1}, "a key is tuple"),
        ({"x": jobs.Unprintable()}, "it holds Unprintable"),
        (float("nan"), "nan"),
        ({"s": "\udcff"}, None),
    ],
)
def test_summary_json(value, problem):
    text, why = summary_json(value, Redactor())
    json.loads(text)  # always valid JSON
    text.encode("utf-8")
    assert (why is None) if problem is None else (problem in why)


def test_a_summary_over_64_kib_is_cut_and_said():
    text, why = summary_json({"x": "y" * 100_000}, Redactor())
    assert len(text.encode()) <= SUMMARY_LIMIT and "more than 65536" in why


def test_a_summary_whose_repr_blocks_is_abandoned(monkeypatch):
    monkeypatch.setattr(timing, "DESCRIBE_TIMEOUT", 0.2)
    t0 = time.monotonic()
    text, why = summary_json([jobs.BlocksWhenPrinted()], Redactor())
    assert time.monotonic() - t0 < 1.0
    assert json.loads(text) == "<list>" and "not JSON" in why
