"""Rendering: times, the JSON shapes of SPEC section 6, and table cells."""

from __future__ import annotations

from types import SimpleNamespace

from beaconlite import render


def test_iso_is_utc_with_milliseconds():
    assert render.iso(1790000000.1234) == "2026-09-21T14:13:20.123Z"
    assert render.iso(None) is None


def test_status_json_shape():
    daemon = SimpleNamespace(pid=7, host="h", version="1", started_at=0.0, heartbeat_at=1.5)
    blank = {"last_status": None, "last_finished_at": None, "live_runs": 0, "last_skip_reason": None,
             "paused": False, "paused_at": None, "paused_by": None, "loaded": True}  # fmt: skip
    rows = [
        {
            "name": "a",
            "schedule": "every 1m",
            "enabled": True,
            "timezone": "UTC",
            "next_run_at": 60.0,
            **blank,
        },
        {"name": "b", "schedule": None, "enabled": False, "timezone": "local", "next_run_at": None, **blank},
    ]
    value = render.status_json(daemon, "running", rows, "/var/lib/b.db")
    assert value["daemon"] == {
        "state": "running", "pid": 7, "host": "h", "version": "1",
        "started_at": "1970-01-01T00:00:00.000Z", "heartbeat_at": "1970-01-01T00:00:01.500Z",
        "database": "/var/lib/b.db",
    }  # fmt: skip
    assert [j["next_run_at"] for j in value["jobs"]] == ["1970-01-01T00:01:00.000Z", None]  # disabled: none
    assert set(value["jobs"][0]) == {
        "name", "schedule", "enabled", "timezone", "next_run_at", "last_status", "last_finished_at",
        "live_runs", "last_skip_reason", "paused", "paused_at", "paused_by", "loaded",
    }  # fmt: skip


def test_reap_json_shape():
    orphan = SimpleNamespace(id=3, job="j", started_at=None, reason="orphaned: x")
    assert render.reap_json(True, [orphan]) == {
        "dry_run": True,
        "reaped": [{"id": 3, "job": "j", "started_at": None, "reason": "orphaned: x"}],
    }


def test_cells_are_one_bounded_line():
    assert render.cell(None) == "-"
    assert render.cell("a\nb", 10) == "a b"
    assert render.cell("x" * 100, 10) == "x" * 9 + "…"
