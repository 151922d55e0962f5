"""The run's HTTP session: requests that cannot outlive the run.

- every request gets the (connect, read) timeouts unless it sets its own, each capped to the
  time left before the deadline;
- a request is refused once the run is aborted (no "zombie" requests after a cancel);
- an in-flight request is broken off at the abort, even one blocked in a socket read or
  receiving a body a byte at a time: the session records every connection it opens and the
  abort shuts their sockets down from the timer thread. A per-socket read timeout alone would
  let a server that trickles one byte every few seconds hold the run for ever.
"""

from __future__ import annotations

import re
import socket
import threading
import weakref
from collections.abc import Callable

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from beaconlite.config import HttpSettings

# All of a request's I/O happens on the thread that called it: the session names its
# registry here for the duration, and connections opened meanwhile join it.
_current = threading.local()


class ConnectionRegistry:
    """The live connections of one run; closing it shuts them all down."""

    def __init__(self):
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet = weakref.WeakSet()
        self.closed = False

    def add(self, conn) -> None:
        with self._lock:
            self._connections.add(conn)
            closed = self.closed
        if closed:  # the abort came while this connection was being opened
            _shutdown(conn)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            connections = list(self._connections)
        for conn in connections:
            _shutdown(conn)


def _shutdown(conn) -> None:
    sock = getattr(conn, "sock", None)
    if sock is None:
        return
    try:
        # socket.socket.shutdown, not SSLSocket.shutdown: the latter also unwraps the TLS
        # object under the feet of the thread blocked in it. shutdown(2) wakes that thread.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class _Tracked:
    def connect(self):
        registry: ConnectionRegistry | None = getattr(_current, "registry", None)
        if registry is not None and registry.closed:
            raise ConnectionAbortedError("the run was aborted")
        super().connect()
        if registry is not None:
            registry.add(self)


class _TrackedHTTPConnection(_Tracked, HTTPConnection):
    pass


class _TrackedHTTPSConnection(_Tracked, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _TrackingAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = POOLS

    def proxy_manager_for(self, proxy, **kwargs):
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = POOLS
        return manager


def describe(e: BaseException) -> str | None:
    """One line for a connection error or a timeout: the request, and the innermost cause
    (not "HTTPConnectionPool(...): Max retries exceeded ... (Caused by <... object at 0x..>")."""
    if not isinstance(e, (requests.ConnectionError, requests.Timeout)):
        return None
    request = getattr(e, "request", None)
    where = f" {request.method} {request.url}" if request is not None else ""
    cause = e.args[0] if e.args else e
    while getattr(cause, "reason", None) is not None and cause.reason is not cause:
        cause = cause.reason
    text = re.sub(r"<[\w.]+ object at 0x[0-9a-fA-F]+>:?\s*", "", str(cause))
    text = re.sub(r"^\w*Connection(Pool)?\([^)]*\):\s*", "", text)  # urllib3's own classes
    return f"{type(e).__name__}:{where}: {text}"


class RunSession(requests.Session):
    """A requests.Session bound to one run's deadline and abort.

    ``checkpoint`` raises the run's RunAborted when due; ``remaining`` gives the seconds left;
    ``on_headers`` learns header values (they are secrets: redacted wherever we write).
    """

    def __init__(
        self,
        settings: HttpSettings,
        checkpoint: Callable[[], None],
        remaining: Callable[[], float],
        on_headers: Callable[[list[str]], None],
    ):
        super().__init__()
        self.settings = settings
        self.registry = ConnectionRegistry()
        self.current: str | None = None  # the latest request ("GET https://..."), for a step's error
        self._checkpoint = checkpoint
        self._remaining = remaining
        self._on_headers = on_headers
        self.headers["User-Agent"] = settings.user_agent
        adapter = _TrackingAdapter()
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def request(self, method, url, *args, timeout=None, **kwargs):
        self._checkpoint()  # refused once aborted, and a timeout if the deadline passed
        if kwargs.get("headers"):
            self._on_headers([str(v) for v in kwargs["headers"].values()])
        kwargs["timeout"] = self._timeout(timeout)
        self.current = f"{str(method).upper()} {str(url).partition('?')[0]}"
        _current.registry = self.registry
        try:
            return super().request(method, url, *args, **kwargs)
        except Exception:
            self._checkpoint()  # broken off by the abort: the abort is the story, not the socket
            raise
        finally:
            _current.registry = None

    def _timeout(self, timeout) -> tuple[float, float]:
        if timeout is None:
            connect, read = self.settings.connect_timeout, self.settings.read_timeout
        elif isinstance(timeout, tuple):
            connect, read = timeout
        else:
            connect = read = timeout
        left = max(self._remaining(), 0.001)
        return (min(connect or left, left), min(read or left, left))

    def break_off(self) -> None:
        """Called from the abort: refuse new connections, shut down the live ones."""
        self.registry.close()
