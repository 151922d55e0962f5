"""The web endpoint's routes (SPEC section 12): the status page, the JSON API with the CLI's
shapes (``render`` builds both), the actions, metrics, and who may ask.

Every path but /healthz and /static/ needs the token (``Authorization: Bearer TOKEN``, or
HTTP Basic with the token as password), compared in constant time. A state-changing request
is a POST with the token in its Authorization header, refused when an ``Origin`` header names
another origin. Answers every poller asks for are computed by one request at a time, at most once a second.
"""

from __future__ import annotations

import base64
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from beaconlite import health, pages, render, statuses, store, timing
from beaconlite.config import Config
from beaconlite.invocation import since_value
from beaconlite.redaction import Redactor
from beaconlite.webserver import Request, Response, error

CACHE_SECONDS = 1.0
STRIP = 30  # runs per job in the status page's strip
SECURITY = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" with the
    # page's own form POSTs, and those would be refused as cross-origin
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
UNAUTHORIZED = {"WWW-Authenticate": 'Basic realm="beaconlite"'}


@dataclass
class DaemonView:
    """What the endpoint may ask of the daemon that serves it."""

    config: Callable[[], Config]  # the running config (a reload replaces it)
    database: Path
    host: str
    wake: Callable[[], None]  # take requests now, not at the next tick
    reap: Callable[[bool], list]  # the orphans (the daemon knows its own runs), flipped unless dry


def _json(status: int, value, headers: dict | None = None) -> Response:
    return Response(status, (render.dumps(value) + "\n").encode(), headers={**SECURITY, **(headers or {})})


@dataclass
class _Shared:
    """An answer every poller asks for: computed by one request at a time, reused for a
    second."""

    computing: threading.Lock = field(default_factory=threading.Lock)
    answer: tuple[float, Response] | None = None  # (when its computation began, the answer)


class WebApp:
    def __init__(self, view: DaemonView):
        self.view = view
        self._shared: dict[str, _Shared] = {}
        self._changed_at = 0.0  # the last action through this endpoint: older answers are stale
        self._redactor: tuple[Config, Redactor] | None = None

    # -- entry ----------------------------------------------------------------------------

    def __call__(self, request: Request) -> Response:
        try:
            return self._answer(request)
        finally:
            if store.is_postgres():
                store.close()  # back to the pool: a restarted server leaves no dead one here

    def _answer(self, request: Request) -> Response:
        path = request.path
        if path == "/healthz":
            return self._shared_answer("healthz", self._healthz)
        if path == "/static/style.css":
            return Response(
                200, pages.STYLE.encode(), "text/css; charset=utf-8", {"Cache-Control": "max-age=300"}
            )
        if not self._authorized(request):
            return Response(401, b'{"error": "a token is needed"}\n', headers={**SECURITY, **UNAUTHORIZED})
        if request.method == "POST":
            if not request.headers.get("authorization"):
                return error(401, "a state-changing request carries the token in its Authorization header")
            if not self._same_origin(request):
                return error(403, "cross-origin requests are refused")
            response = self._redact(self._post(request))
            self._changed_at = time.monotonic()
            return response
        if request.method not in ("GET", "HEAD"):
            return error(405, f"{request.method} is not answered here")
        return self._get(request)

    def _authorized(self, request: Request) -> bool:
        token = self.view.config().web.token.encode()
        given = request.headers.get("authorization", "")
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() == "bearer":
            offered = credentials.strip().encode("utf-8", "replace")
        elif scheme.lower() == "basic":
            try:
                offered = base64.b64decode(credentials.strip(), validate=True).partition(b":")[2]
            except ValueError:
                return False
        else:
            return False
        return bool(token) and hmac.compare_digest(offered, token)

    @staticmethod
    def _same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        return origin is None or origin == f"http://{request.headers.get('host', '')}"

    def _redact(self, response: Response) -> Response:
        """The one redaction pass, over what leaves (rows are redacted already: this is for
        anything that was not, a job name's echo, an error text)."""
        if response.content_type.startswith(("application/json", "text/")):
            config = self.view.config()
            if self._redactor is None or self._redactor[0] is not config:
                self._redactor = (config, Redactor(config.secrets))
            response.body = self._redactor[1](response.body.decode("utf-8", "replace")).encode()
        return response

    def _shared_answer(self, key: str, build: Callable[[], Response]) -> Response:
        """However many pollers ask, one computes (redacted once) and the others reuse it for
        a second; while it is recomputed they get the previous answer rather than wait, so
        polling costs the daemon one computation a second per answer, never one per client.
        After an action here (a trigger, a pause) only an answer computed since will do: the
        page a button leads back to shows what the button did."""
        shared = self._shared.setdefault(key, _Shared())
        answer = shared.answer
        if self._fresh(answer):
            return answer[1]
        current = answer is not None and answer[0] >= self._changed_at
        if not shared.computing.acquire(blocking=not current):
            return answer[1]
        try:
            if not self._fresh(shared.answer):
                shared.answer = (time.monotonic(), self._redact(build()))
            return shared.answer[1]
        finally:
            shared.computing.release()

    def _fresh(self, answer: tuple[float, Response] | None) -> bool:
        if answer is None or answer[0] < self._changed_at:
            return False
        return time.monotonic() < answer[0] + CACHE_SECONDS

    # -- reading --------------------------------------------------------------------------

    def _get(self, request: Request) -> Response:
        path, query = request.path, request.query
        if path == "/":
            return self._shared_answer("page", self._status_page)
        if path == "/api/status":
            return self._shared_answer("status", lambda: _json(200, self._status_json()))
        if path == "/api/health":
            return self._shared_answer("health", lambda: _json(200, render.health_json(self._health())))
        if path == "/metrics":
            return self._shared_answer("metrics", self._metrics)
        if path == "/api/runs":
            return self._redact(self._runs(query))
        if path.startswith("/api/runs/") or path.startswith("/runs/"):
            found = self._run(path.rsplit("/", 1)[1])
            if found is None:
                return self._redact(error(404, f"no run {path.rsplit('/', 1)[1]!r}"))
            detail = render.run_detail_json(*found)
            if path.startswith("/api/"):
                return self._redact(_json(200, detail))
            page = pages.run_page(detail, self._zone())
            return self._redact(Response(200, page.encode(), "text/html; charset=utf-8", SECURITY))
        return self._redact(error(404, f"no such path: {path}"))

    def _zone(self):
        from beaconlite.cron import resolve_timezone

        return resolve_timezone(self.view.config().daemon.timezone)

    def _health(self) -> health.Health:
        return health.assess(self.view.config(), time.time(), lock_free=False)

    def _healthz(self) -> Response:
        ok = self._health().healthy
        return Response(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n", "text/plain; charset=utf-8")

    def _metrics(self) -> Response:
        text = health.prometheus_text(self.view.config(), self._health(), time.time())
        return Response(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8", SECURITY)

    def _status_json(self) -> dict:
        now = time.time()
        daemon, state = store.daemon_state(now)
        config = self.view.config()
        rows = store.job_overview(config, running=state == "running")
        nodes = store.cluster_nodes(config.daemon.heartbeat_interval)
        return render.status_json(daemon, state, rows, self.view.database, nodes)

    def _status_page(self) -> Response:
        now, config = time.time(), self.view.config()
        daemon, state = store.daemon_state(now)
        verdict = self._health()
        jobs = store.job_overview(config, running=state == "running")
        for job in jobs:
            job["overdue"] = job["name"] in verdict.overdue
        page = pages.status_page(
            {
                "daemon": daemon,
                "state": state,
                "database": self.view.database,
                "problems": verdict.problems,
                "jobs": jobs,
                "strips": {j["name"]: store.recent_runs(j["name"], STRIP) for j in jobs},
                "live": store.live_runs(),
                "nodes": store.cluster_nodes(config.daemon.heartbeat_interval),
                "zones": {j.name: j.zone() for j in config.jobs},
            },
            self._zone(),
        )
        return Response(200, page.encode(), "text/html; charset=utf-8", SECURITY)

    def _runs(self, query: dict[str, str]) -> Response:
        limit_text = query.get("limit", "20")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 10_000:
            return error(400, "limit: a whole number from 1 to 10000")
        status = query.get("status") or None
        if status is not None and status not in statuses.ALL:
            return error(400, f"status: one of {', '.join(statuses.ALL)}")
        try:
            since = since_value(query["since"], self._zone()) if query.get("since") else None
        except ValueError as e:
            return error(400, f"since: {e}")
        found = store.list_runs(
            job=query.get("job") or None, status=status, since=since, limit=int(limit_text)
        )
        return _json(200, [render.run_json(r, total, ok) for r, total, ok in found])

    @staticmethod
    def _run(text: str):
        return store.get_run(int(text)) if text.isdigit() and len(text) < 16 else None

    # -- actions --------------------------------------------------------------------------

    def _post(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        form = request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
        if parts[:2] == ["api", "jobs"] and len(parts) == 4:
            name, action = parts[2], parts[3]
            if self.view.config().job(name) is None:
                return error(404, f"no job named {name!r}")
            handler = {"trigger": self._trigger, "pause": self._pause, "resume": self._resume}.get(action)
            if handler is None:
                return error(404, f"no action {action!r}")
            response = handler(name, request)
        elif parts[:2] == ["api", "runs"] and len(parts) == 4 and parts[3] == "cancel":
            response = self._cancel(parts[2])
        elif parts == ["api", "reap"]:
            response = self._reap(request.query.get("dry_run", "") in ("1", "true", "yes"))
        else:
            return error(404, f"no such action: {request.path}")
        if form and response.status < 400:  # a button on the page: back to it
            return Response(303, b"", "text/plain", {"Location": "/"})
        return response

    def _ask(self, kind: str, **fields):
        request_id = store.add_request(kind, time.time(), **fields)
        self.view.wake()
        until = time.monotonic() + timing.REQUEST_TAKE_WAIT
        while time.monotonic() < until:
            answer = store.get_request(request_id)
            if answer is not None and answer.answer is not None:
                return answer
            time.sleep(timing.CLI_POLL)
        store.withdraw_request(request_id)
        return None

    def _trigger(self, name: str, request: Request) -> Response:
        answer = self._ask("trigger", job=name)
        if answer is None:
            return error(503, "the daemon did not take the request in time")
        if answer.answer == "queued":
            return _json(202, {"queued": True})
        if answer.answer == "refused":
            return _json(409, {"error": answer.error, "run_id": answer.result_run_id})
        return _json(202, {"run_id": answer.result_run_id})

    def _cancel(self, text: str) -> Response:
        found = self._run(text)
        if found is None:
            return error(404, f"no run {text!r}")
        if found[0].status != statuses.RUNNING:
            return error(409, f"run {text} is not live (it is {found[0].status})")
        answer = self._ask("cancel", run_id=int(text))
        if answer is None:
            return error(503, "the daemon did not take the request in time")
        if answer.answer == "refused":
            return error(409, answer.error)
        return _json(200, {"id": int(text), "cancelled": True})

    def _pause(self, name: str, request: Request) -> Response:
        by = f"{self._user(request)}@{request.client.rsplit(':', 1)[0]}"
        paused = store.pause_job(name, time.time(), by)
        return _json(200, {"job": name, "paused": True, "changed": paused is not None})

    def _resume(self, name: str, request: Request) -> Response:
        changed = store.resume_job(name, time.time())
        return _json(200, {"job": name, "paused": False, "changed": changed})

    def _reap(self, dry_run: bool) -> Response:
        return _json(200, render.reap_json(dry_run, self.view.reap(dry_run)))

    @staticmethod
    def _user(request: Request) -> str:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                user = base64.b64decode(credentials.strip(), validate=True).partition(b":")[0].decode()
                return quote(user, safe="") or "web"
            except ValueError:
                pass
        return "web"
