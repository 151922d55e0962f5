"""The web endpoint (SPEC section 12) on a real daemon: auth, the API's shapes against the
CLI's, the actions, metrics, and clients that misbehave."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from conftest import DAEMON_DEFAULTS, wait_for
from test_daemon import cli

TOKEN = "w3b-t0ken-value"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def web_defaults(port: int) -> str:
    return DAEMON_DEFAULTS + f'\n[web]\nlisten = "127.0.0.1:{port}"\ntoken = "{TOKEN}"\n'


JOBS = """
[[jobs]]
name = "tick"
schedule = "every 1s"
run = "beaconlite.builtin:noop"
[[jobs]]
name = "hostile"
command = ["sh", "-c", "echo '<script>window.pwned=1</script>\\"><img src=x onerror=window.pwned=2>'; exit 3"]
[[jobs]]
name = "slow"
run = "jobs:wait_for_file"
params = {path = "%s"}
"""


class Web:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"

    def call(self, path, method="GET", token=TOKEN, headers=None, data=None):
        request = urllib.request.Request(
            self.base + path, method=method, data=data, headers=dict(headers or {})
        )
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, path, method="GET", **kw):
        status, _, body = self.call(path, method, **kw)
        return status, json.loads(body)


@pytest.fixture
def web(daemon, tmp_path):
    port = free_port()
    d = daemon(JOBS % (tmp_path / "go"), defaults=web_defaults(port))
    wait_for(lambda: d.count("web.start"), 5, what="the endpoint")
    yield d, Web(port)
    (tmp_path / "go").touch()


def test_token_rules(web):
    d, w = web
    status, headers, body = w.call("/healthz", token=None)
    assert status == 200 and body == b"ok\n"
    for path in ("/", "/api/status", "/api/runs", "/metrics", "/runs/1", "/api/health"):
        status, headers, body = w.call(path, token=None)
        assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="beaconlite"', path
        assert b"tick" not in body  # nothing about the jobs
        assert w.call(path, token="wrong")[0] == 401
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    assert w.call("/api/status", token=None, headers={"Authorization": f"Basic {basic}"})[0] == 200
    status, headers, _ = w.call("/static/style.css", token=None)
    assert status == 200 and headers["Content-Type"].startswith("text/css")


def test_the_api_answers_with_the_cli_shapes(web):
    d, w = web
    wait_for(lambda: len(d.runs("tick")) >= 2, 5, what="runs")
    status, api = w.json("/api/status")
    cli_status = json.loads(cli("-c", d.config, "status", "--json").stdout)
    assert status == 200 and api.keys() == cli_status.keys()
    assert api["daemon"].keys() == cli_status["daemon"].keys()
    assert [j.keys() for j in api["jobs"]] == [j.keys() for j in cli_status["jobs"]]
    assert [j["name"] for j in api["jobs"]] == ["tick", "hostile", "slow"]
    status, runs = w.json("/api/runs?job=tick&limit=2")
    cli_runs = json.loads(cli("-c", d.config, "runs", "--job", "tick", "--limit", "2", "--json").stdout)
    assert (
        status == 200
        and [r["id"] for r in runs] == [r["id"] for r in cli_runs]
        and runs[0].keys() == cli_runs[0].keys()
    )
    run_id = runs[-1]["id"]
    status, one = w.json(f"/api/runs/{run_id}")
    assert status == 200 and one == json.loads(cli("-c", d.config, "show", str(run_id), "--json").stdout)
    status, health = w.json("/api/health")
    assert (
        status == 200 and health.keys() == json.loads(cli("-c", d.config, "health", "--json").stdout).keys()
    )
    assert w.json("/api/runs/999999")[0] == 404
    assert w.json("/api/runs?limit=zero")[0] == 400 and w.json("/api/runs?status=bogus")[0] == 400
    assert w.json("/api/runs?since=2w")[0] == 200 and w.json("/api/runs?since=whenever")[0] == 400


def test_actions(web, tmp_path):
    d, w = web
    status, answer = w.json("/api/jobs/slow/trigger", "POST")
    assert status == 202 and isinstance(answer["run_id"], int)
    slow = answer["run_id"]
    status, answer = w.json("/api/jobs/slow/trigger", "POST")
    assert status == 409 and answer["error"].startswith("overlap:")
    assert w.json("/api/jobs/nosuch/trigger", "POST")[0] == 404
    assert w.json(f"/api/runs/{slow}/cancel", "POST") == (200, {"id": slow, "cancelled": True})
    wait_for(
        lambda: [r for r in d.runs("slow") if r.id == slow and r.status == "cancelled"], 5, what="cancel"
    )
    assert w.json(f"/api/runs/{slow}/cancel", "POST")[0] == 409  # not live any more
    assert w.json("/api/runs/999999/cancel", "POST")[0] == 404
    assert w.json("/api/jobs/tick/pause", "POST") == (200, {"job": "tick", "paused": True, "changed": True})
    assert json.loads(cli("-c", d.config, "status", "--json").stdout)["jobs"][0]["paused"] is True
    assert w.json("/api/jobs/tick/resume", "POST") == (200, {"job": "tick", "paused": False, "changed": True})
    status, reaped = w.json("/api/reap?dry_run=1", "POST")
    assert status == 200 and reaped == {"dry_run": True, "reaped": []}
    # state changes: POST only, same origin only
    assert w.call("/api/jobs/tick/trigger")[0] == 404  # a GET is no action
    status, _, body = w.call("/api/jobs/tick/trigger", "POST", headers={"Origin": "http://evil.example"})
    assert status == 403 and b"cross-origin" in body
    # a form on the page: back to the page
    status, headers, _ = w.call(
        "/api/jobs/tick/pause",
        "POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        data=b"",
    )
    assert status == 200 or status == 303  # urllib follows the redirect to /


def test_metrics_parse_and_pass_promtool(web):
    from prometheus_client.parser import text_string_to_metric_families

    d, w = web
    assert cli("-c", d.config, "trigger", "hostile", "--wait").returncode == 1
    wait_for(lambda: len(d.runs("tick")) >= 2, 5, what="runs")
    status, headers, body = w.call("/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["beaconlite_healthy"].samples[0].value in (0, 1)
    last = {
        (s.labels["job"], s.labels["status"]): s.value for s in families["beaconlite_job_last_status"].samples
    }
    assert (
        last[("hostile", "error")] == 1
        and last[("hostile", "success")] == 0
        and last[("tick", "success")] == 1
    )
    successes = {s.labels["job"] for s in families["beaconlite_job_last_success_timestamp_seconds"].samples}
    assert "tick" in successes and "hostile" not in successes  # never succeeded: no sample, not 0
    assert {"beaconlite_job_runs_24h", "beaconlite_job_paused", "beaconlite_job_overdue"} <= set(families)
    for name in families:
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text
    assert cli("-c", d.config, "health", "--prometheus").stdout.startswith("# HELP beaconlite_healthy")
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), (
            check.stdout + check.stderr
        )


def test_pages_escape_what_they_show(web):
    d, w = web
    assert cli("-c", d.config, "trigger", "hostile", "--wait").returncode == 1
    run_id = next(r.id for r in d.runs("hostile"))
    status, headers, page = w.call(f"/runs/{run_id}")
    assert status == 200 and headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert b"<script>window.pwned" not in page and b"&lt;script&gt;window.pwned" in page
    assert b"<img src=x" not in page
    status, _, page = w.call("/")
    assert (
        status == 200 and b'data-job="tick"' in page and b'data-status="' in page and b'href="/runs/' in page
    )


# -- clients that misbehave --------------------------------------------------------------------


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


@pytest.mark.skipif(not shutil.os.path.exists("/proc/self/status"), reason="reads /proc")
def test_a_thousand_idle_connections_and_slowloris_bind_nothing(web):
    d, w = web
    host, port = "127.0.0.1", int(w.base.rsplit(":", 1)[1])
    before = threads_of(d.proc.pid)
    idle = []
    for _ in range(1000):
        s = socket.create_connection((host, port), timeout=5)
        idle.append(s)
    trickle = []
    for _ in range(50):  # slowloris: a header byte at a time, never finished
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"GET /api/status HTTP/1.1\r\nX-Slow: ")
        trickle.append(s)
    try:
        t0 = time.monotonic()
        status, _, body = w.call("/healthz", token=None)
        took = time.monotonic() - t0
        assert status == 200 and took < 2.0, took  # others are still answered
        assert threads_of(d.proc.pid) <= before + 2  # sockets, not threads
        heartbeat = json.loads(cli("-c", d.config, "status", "--json").stdout)["daemon"]["state"]
        assert heartbeat == "running"  # the tick kept its pace
        start = time.time()
        fresh = lambda: [r for r in d.runs("tick") if r.scheduled_at > start and r.started_at]  # noqa: E731
        wait_for(lambda: len(fresh()) >= 2, 5, what="runs while the sockets are open")
        assert max(r.started_at - r.scheduled_at for r in fresh()) < 0.5  # the runs kept their time
    finally:
        for s in idle + trickle:
            s.close()


def test_oversized_malformed_and_stalled_requests(web):
    d, w = web
    host, port = "127.0.0.1", int(w.base.rsplit(":", 1)[1])

    def raw(data: bytes, wait: float = 5.0) -> bytes:
        with socket.create_connection((host, port), timeout=wait) as s:
            s.sendall(data)
            chunks = []
            try:
                while chunk := s.recv(65536):
                    chunks.append(chunk)
            except (TimeoutError, ConnectionResetError):
                pass
            return b"".join(chunks)

    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    assert raw(b"POST /api/reap HTTP/1.1\r\nContent-Length: 1000000000\r\n" + auth + b"\r\n").startswith(
        b"HTTP/1.1 413"
    )
    assert raw(b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n").startswith(b"HTTP/1.1 431")
    assert raw(b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"GET / HTTP/1.1\r\nbad header line\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"\x00\xff\xfe garbage \r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"POST /api/reap HTTP/1.1\r\nTransfer-Encoding: chunked\r\n" + auth + b"\r\n").startswith(
        b"HTTP/1.1 501"
    )
    assert w.call("/healthz", token=None)[0] == 200  # and the endpoint is fine


def test_a_web_port_in_use_and_a_bad_listen(daemon, make_config):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        d = daemon(JOBS % "/nonexistent", start=False, defaults=web_defaults(port))
        out = cli("-c", d.config, "daemon", timeout=20)
    assert out.returncode == 1 and "in use" in out.stderr and out.stderr.count("\n") == 1
    path = make_config('[web]\nlisten = "127.0.0.1:9470"\n', name="notoken.toml")
    out = cli("-c", path, "check-config")
    assert out.returncode == 2 and 'key "token": required' in out.stderr
    path = make_config('[web]\nlisten = "localhost"\ntoken = "x"\n', name="badlisten.toml")
    out = cli("-c", path, "check-config")
    assert out.returncode == 2 and "HOST:PORT" in out.stderr


def test_polling_clients_never_stall_a_run(web):
    """Fifty clients polling /api/status every 100 ms while a job fires every second."""
    d, w = web
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            w.call("/api/status")
            time.sleep(0.1)

    clients = [threading.Thread(target=poll, daemon=True) for _ in range(50)]
    for c in clients:
        c.start()
    try:
        start = time.time()
        wait_for(lambda: len([r for r in d.runs("tick") if r.scheduled_at > start]) >= 3, 6, what="runs")
        late = [r.started_at - r.scheduled_at for r in d.runs("tick") if r.scheduled_at > start]
        assert max(late) < 0.5, late
    finally:
        stop.set()


def test_pollers_share_one_computation_and_never_wait_behind_it(make_config, tmp_db, monkeypatch):
    """Twenty simultaneous pollers cost one status computation; while the next one is slow,
    they get the previous answer at once; after an action, only a fresh answer will do."""
    from beaconlite import store
    from beaconlite.config import load_config
    from beaconlite.webapp import CACHE_SECONDS, DaemonView, WebApp
    from beaconlite.webserver import Request

    config = load_config(make_config(f'[web]\nlisten = "127.0.0.1:1"\ntoken = "{TOKEN}"\n'))
    app = WebApp(DaemonView(lambda: config, tmp_db, "here", wake=lambda: None, reap=lambda dry: []))
    computing, release = [], threading.Event()
    overview = store.job_overview

    def slow_overview(*args, **kw):
        computing.append(time.monotonic())
        release.wait(10)
        return overview(*args, **kw)

    monkeypatch.setattr(store, "job_overview", slow_overview)
    auth = {"authorization": f"Bearer {TOKEN}"}

    def poll_all(n=20):
        answers = []
        threads = [
            threading.Thread(
                target=lambda: answers.append(app(Request("GET", "/api/status", {}, auth, b"", "c")))
            )
            for _ in range(n)
        ]
        for t in threads:
            t.start()
        return threads, answers

    threads, answers = poll_all()
    wait_for(lambda: computing, 5, what="the first computation")
    release.set()
    for t in threads:
        t.join(10)
    assert len(computing) == 1 and len(answers) == 20 and len({a.body for a in answers}) == 1

    release.clear()
    time.sleep(CACHE_SECONDS)  # the answer is a second old: the next poller recomputes
    began = time.monotonic()
    threads, answers = poll_all()
    wait_for(lambda: len(answers) >= 19, 5, what="the pollers that need not wait")
    assert time.monotonic() - began < 2 and len(computing) == 2  # one computes, nineteen reuse
    release.set()
    for t in threads:
        t.join(10)

    post = Request("POST", "/api/jobs/nope/pause", {}, auth, b"", "c")
    assert app(post).status == 404
    app(Request("GET", "/api/status", {}, auth, b"", "c"))
    assert len(computing) == 3  # after an action, the answer is recomputed at once
