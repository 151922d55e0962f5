"""Bad input, fuzzed: configs and CLI arguments never produce a traceback, only exit 0/1/2."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beaconlite import config as config_module

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def toml_value(value) -> str:
    """A tiny TOML writer for the fuzzer's values (JSON strings are valid TOML strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def table(name: str, keys: dict) -> str:
    return f"[{name}]\n" + "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in keys.items())


scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "30s",
            "0",
            "-1s",
            "1h30m",
            "366d",
            "every 1s",
            "*/5 * * * *",
            "@hourly",
            "61 * * * *",
            "50MB",
            "${NOPE}",
            "beaconlite.builtin:noop",
            "skip",
            "queue",
            "local",
            "UTC",
            "Mars/Base",
            "ünïcødé",
            "",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=8,
)


def keys_of(known: dict) -> st.SearchStrategy:
    """Tables with the section's real keys (wrong values) and some random keys."""
    return st.dictionaries(
        st.one_of(st.sampled_from(sorted(known)), st.text(max_size=12)), values, max_size=6
    )


@st.composite
def configs(draw) -> str:
    parts = []
    if draw(st.booleans()):
        parts.append(table("daemon", draw(keys_of(config_module.DAEMON))))
    if draw(st.booleans()):
        parts.append(table("http", draw(keys_of(config_module.HTTP))))
    for _ in range(draw(st.integers(0, 3))):
        job = draw(keys_of(config_module.JOB))
        if draw(st.booleans()):
            job.setdefault("name", draw(st.text(max_size=10)))
        parts.append("[[jobs]]\n" + "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in job.items()))
    for _ in range(draw(st.integers(0, 1))):
        parts.append(
            "[[notify]]\n"
            + "".join(
                f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in draw(keys_of(config_module.NOTIFY)).items()
            )
        )
    return "\n".join(parts)


def assert_clean(result, allowed=(0, 2)):
    assert result.code in allowed, (result.code, result.err)
    assert "Traceback" not in result.err + result.out
    if result.code == 2:
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("beaconlite: error: "), result.err


@FUZZ
@given(text=configs())
def test_fuzzed_configs(text, tmp_path, cli):
    path = tmp_path / "fuzz.toml"
    path.write_text(text, encoding="utf-8")
    assert_clean(cli("-c", path, "check-config"))


@FUZZ
@given(text=st.text(max_size=300))
def test_fuzzed_raw_text(text, tmp_path, cli):
    path = tmp_path / "raw.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_clean(cli("-c", path, "check-config"))


@FUZZ
@given(data=st.binary(max_size=200))
def test_fuzzed_bytes(data, tmp_path, cli):
    path = tmp_path / "bytes.toml"
    path.write_bytes(data)
    assert_clean(cli("-c", path, "check-config"))


WORDS = [
    "runs",
    "show",
    "status",
    "prune",
    "reap",
    "health",
    "check-config",
    "cancel",
    "--limit",
    "--since",
    "--job",
    "--status",
    "--json",
    "--older-than",
    "--dry-run",
    "--batch-size",
    "--prometheus",
    "-1",
    "0",
    "abc",
    "5x",
    "1d",
    "999999999999999999999",
    "--",
    "-c",
    "--database",
    "ünïcødé",
    "success",
    "",
]


@FUZZ
@given(args=st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=8)), max_size=6))
def test_fuzzed_cli_arguments(args, tmp_path, cli):
    db = tmp_path / "fuzz.db"
    # against a missing database by default: nothing the fuzzer sends may create one
    result = cli("--database", db, *args)
    assert_clean(result, allowed=(0, 1, 2))
    assert not db.exists() or "prune" in args or "reap" in args


def test_truncated_database(cli, tmp_path):
    from beaconlite import store

    path = tmp_path / "t.db"
    store.open_writer(path)
    for i in range(2000):
        store.record_skipped("j", float(i), "x" * 100, float(i))
    store.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    for args in (["runs"], ["status"], ["show", "1"], ["health"]):
        result = cli("--database", path, *args)
        assert "Traceback" not in result.err
        assert result.code in (1, 2)  # health: "unhealthy, database unreadable"; others: exit 2
        if args != ["health"]:
            assert result.code == 2 and result.err.count("\n") == 1


def test_unreadable_database(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import as_unprivileged

    path = tmp_path / "private.db"
    path.write_bytes(b"")
    os.chmod(path, 0)
    argv = as_unprivileged([sys.executable, "-m", "beaconlite", "--database", str(path), "runs"])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "not readable" in done.stderr or "permission denied" in done.stderr, done.stderr
