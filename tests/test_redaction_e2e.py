"""No piece of a secret in anything beaconlite writes (SPEC section 9), property-tested.

Random high-entropy secrets (drawn from a seed, so shrinking cannot turn them into
"000000...") are placed in URLs, headers, params, command arguments and environment,
summaries, step names, errors, `ctx.log` lines and output around the 64 KiB cut. Then no
6-character piece of any of them may appear in the database file and its WAL, the logs
(text and JSON), notification bodies, or CLI output.
"""

from __future__ import annotations

import io
import logging
import os
import random
import string
import time

from conftest import wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beaconlite import loader, logs, store
from beaconlite.cli import cli as cli_group
from beaconlite.config import load_config
from beaconlite.notify import Notifier
from beaconlite.redaction import Redactor
from beaconlite.runner import Runner

ALPHABET = string.ascii_letters + string.digits + ".*+?[](){}|^$\\-_=/%&#@!~ "
PIECE = 6
# A command: the secret (from the environment), then {pad} bytes of "x", then the secret
# again on stderr (from its argument): the 64 KiB cut of the output tail may fall in the first.
PRINT_PADDED = "printf %s \\\"$S\\\"; head -c $PAD /dev/zero | tr '\\\\0' x; printf '%s\\\\n' \\\"$1\\\" >&2"


def make_secret(seed: int, multiline: bool) -> str:
    rng = random.Random(seed)
    one = "".join(rng.choice(ALPHABET) for _ in range(32)).strip() + rng.choice(string.ascii_letters)
    if not multiline:
        return one
    lines = [
        "".join(rng.choice(string.ascii_letters + string.digits + "+/") for _ in range(32)) for _ in range(3)
    ]
    return "-----BEGIN TEST KEY-----\n" + "\n".join(lines) + "\n-----END TEST KEY-----"


def pieces(secret: str) -> set[str]:
    core = [line for line in secret.splitlines() if "TEST KEY" not in line] or [secret]
    return {line[i : i + PIECE] for line in core for i in range(len(line) - PIECE + 1)}


def leaks(haystack: str, secrets: list[str]) -> list[str]:
    return sorted({p for s in secrets for p in pieces(s) if p in haystack})


def fresh_runner(directory, body: str) -> Runner:
    """A runner over a new database (a fixture would be shared by every example)."""
    config_path = directory / "beaconlite.toml"
    config_path.write_text('[daemon]\ndatabase = "b.db"\n' + body)
    config = load_config(config_path)
    store.open_writer(config.daemon.database)
    instance = store.register_instance("daemon", os.getpid(), "test", "t", 60, time.time())
    return Runner(config, loader.load(config), instance)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    seeds=st.lists(st.integers(0, 2**63), min_size=3, max_size=3),
    multiline=st.booleans(),
    pad=st.integers(440, 500),  # the error line's 500-character cut falls in or near a secret
    tail_pad=st.integers(65536 - 300, 65536),  # the 64 KiB output cut, likewise
)
def test_no_piece_of_a_secret_anywhere(
    http_server, tmp_path_factory, monkeypatch, seeds, multiline, pad, tail_pad
):
    main, in_url, header = (make_secret(s, multiline and i == 0) for i, s in enumerate(seeds))
    in_url = "".join(c for c in in_url if c.isalnum())  # fits a host name and a path
    monkeypatch.setenv("S_MAIN", main)
    monkeypatch.setenv("S_URL", in_url)
    monkeypatch.setenv("S_HEADER", header)
    secrets = [main, in_url, header]
    streams = {"json": io.StringIO(), "text": io.StringIO()}
    root = logging.getLogger("beaconlite")
    handlers = []
    for kind, stream in streams.items():
        handler = logging.StreamHandler(stream)
        handler.setFormatter(
            (logs.JsonFormatter if kind == "json" else logs.TextFormatter)(Redactor([main, in_url]))
        )
        root.addHandler(handler)
        handlers.append(handler)
    root.setLevel(logging.DEBUG)
    try:
        r = fresh_runner(
            tmp_path_factory.mktemp("redaction"),
            f"""
            [[notify]]
            url = "{http_server.url}/sink"
            on = ["success", "warning", "error", "timeout", "cancelled"]
            [[jobs]]
            name = "py"
            run = "jobs:leak_everywhere"
            [jobs.params]
            secret = "${{S_MAIN}}"
            header = "${{S_HEADER}}"
            url = "{http_server.url}"
            pad = {pad}
            fail = true
            [[jobs]]
            name = "py-ok"
            run = "jobs:leak_everywhere"
            [jobs.params]
            secret = "${{S_MAIN}}"
            header = "${{S_HEADER}}"
            url = "{http_server.url}"
            pad = {pad}
            [[jobs]]
            name = "cmd"
            command = ["sh", "-c", "{PRINT_PADDED}", "sh", "${{S_MAIN}}"]
            env = {{S = "${{S_MAIN}}", PAD = "{tail_pad}"}}
            [[jobs]]
            name = "web"
            [[jobs.checks]]
            url = "{http_server.url}/500/${{S_URL}}/x?q=${{S_HEADER}}"
            headers = {{Authorization = "Bearer ${{S_HEADER}}"}}
            [[jobs.checks]]
            url = "http://user:${{S_URL}}@{http_server.url.removeprefix("http://")}/500/x"
            """.replace("\n            ", "\n"),
        )
        notifier = Notifier(r.config)
        r.on_end = lambda end: notifier.run_ended(end.job, end.run_id, end.status)
        for name in ("py", "py-ok", "cmd", "web"):
            live = r.start(r.config.job(name), "manual", float(len(name)))
            assert live.ended.wait(10), name
        wait_for(lambda: len(http_server.bodies) >= 4, 10, what="four notifications")
    finally:
        for handler in handlers:
            root.removeHandler(handler)
    written = {
        "log (json)": streams["json"].getvalue(),
        "log (text)": streams["text"].getvalue(),
        "notifications": "\n".join(b.decode() for b in http_server.bodies),
    }
    database = r.config.daemon.database
    from click.testing import CliRunner

    for args in (
        ["runs", "--json"],
        ["runs"],
        ["status"],
        *[["show", str(i), "--json"] for i in (1, 2, 3, 4)],
    ):
        result = CliRunner().invoke(cli_group, ["--database", str(database), *args])
        written[" ".join(args)] = result.output
    store.close()
    for suffix in ("", "-wal"):
        path = database.with_name(database.name + suffix)
        if path.exists():
            written[path.name] = path.read_bytes().decode("latin-1")
    http_server.bodies.clear()
    assert "*" * 3 in written["show 1 --json"]  # the secret was there, and masked
    for where, text in written.items():
        assert not leaks(text, secrets), (where, leaks(text, secrets))
