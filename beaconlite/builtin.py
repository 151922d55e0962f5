"""Built-in integrity runs: `noop` for smoke tests and benchmarks, `selfcheck` of beaconlite's
own database. Use them as `run = "beaconlite.builtin:noop"`."""

from __future__ import annotations

from beaconlite import clock, store


def noop(ctx) -> None:
    """Does nothing, succeeds."""


def selfcheck(ctx) -> dict:
    """An integrity run of beaconlite's own database."""
    if not store.is_postgres():  # PostgreSQL checks its own pages
        with ctx.step("quick_check"):
            result = [row[0] for row in store.db.execute_sql("PRAGMA quick_check").fetchall()]
            if result != ["ok"]:
                raise RuntimeError("quick_check: " + "; ".join(result[:5]))
    with ctx.step("schema version"):
        if store.is_postgres():
            version = store.SchemaVersion.select(store.SchemaVersion.version).scalar()
        else:
            version = store.db.execute_sql("PRAGMA user_version").fetchone()[0]
        if version != store.SCHEMA_VERSION:
            raise RuntimeError(f"schema version {version}, expected {store.SCHEMA_VERSION}")
    with ctx.step("no run past its deadline"):
        # Past the deadline by more than a minute: the runner and the reaper should have
        # ended it long before; if one is still "running", the record is lying.
        overdue = [r.id for r in store.live_runs() if r.deadline_at < clock.wall() - 60]
        if overdue:
            ctx.warn(f"{len(overdue)} live run(s) past their deadline: {overdue[:10]}")
    return {"schema_version": version, "live_runs": len(store.live_runs())}
