"""The daemon's HTTP transport: one selector thread reads requests, a few workers answer.

Everything a client controls is bounded, so no client can hold the daemon or the others:
- connections: at most ``MAX_CONNECTIONS`` open; a new one beyond that evicts the oldest
  that has not finished sending its request (a slowloris loses its place, not the others);
- time: a request must arrive whole within ``REQUEST_TIMEOUT`` of its connection (idle or
  trickling connections are closed with 408); answers are written with a send timeout;
- size: headers at most ``MAX_HEADER`` bytes, bodies at most ``MAX_BODY`` (413 / 431);
- threads: reading is one thread for every connection (a thousand idle sockets are a
  thousand selector entries, not threads); ``WORKERS`` threads answer complete requests from
  a bounded queue (503 when it is full).
One request per connection (``Connection: close``): no keep-alive to bound.
"""

from __future__ import annotations

import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 256
REQUEST_TIMEOUT = 10.0
SEND_TIMEOUT = 10.0
MAX_HEADER = 16 * 1024
MAX_BODY = 64 * 1024
WORKERS = 4
QUEUE = 64
REASONS = {200: "OK", 202: "Accepted", 303: "See Other", 304: "Not Modified", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 409: "Conflict", 411: "Length Required", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
           503: "Service Unavailable"}  # fmt: skip


@dataclass
class Request:
    method: str
    path: str  # decoded, without the query string
    query: dict[str, str]  # the last value of each name
    headers: dict[str, str]  # lower-case names
    body: bytes
    client: str


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        head = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Unknown')}",
                f"Content-Type: {self.content_type}", f"Content-Length: {len(self.body)}",
                "Connection: close", "X-Content-Type-Options: nosniff"]  # fmt: skip
        head += [f"{name}: {value}" for name, value in self.headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + self.body


def error(status: int, message: str) -> Response:
    import json

    return Response(status, (json.dumps({"error": message}) + "\n").encode())


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse(data: bytes, client: str) -> Request | None:
    """A whole request from ``data``; None while more is needed; BadRequest when it is not
    one we answer."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEADER:
            raise BadRequest(431, "request headers too large")
        return None
    if end > MAX_HEADER:
        raise BadRequest(431, "request headers too large")
    try:
        lines = data[:end].decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise BadRequest(400, "malformed request line") from None
    if not version.startswith("HTTP/1.") or not method.isalpha() or not target.startswith("/"):
        raise BadRequest(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, "malformed header")
        headers[name.lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise BadRequest(501, "chunked bodies are not accepted")
    length_text = headers.get("content-length", "0")
    if not length_text.isascii() or not length_text.isdigit():
        raise BadRequest(400, "bad Content-Length")
    length = int(length_text) if len(length_text) <= 12 else MAX_BODY + 1
    if length > MAX_BODY:
        raise BadRequest(413, f"request body larger than {MAX_BODY} bytes")
    body = data[end + 4 :]
    if len(body) < length:
        return None
    parts = urlsplit(target)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True, max_num_fields=50).items()}
    return Request(method.upper(), unquote(parts.path), query, headers, body[:length], client)


@dataclass
class _Connection:
    sock: socket.socket
    client: str
    opened: float
    data: bytearray = field(default_factory=bytearray)


class Server:
    """Serves ``handler(Request) -> Response`` on (host, port) until ``stop()``."""

    def __init__(self, host: str, port: int, handler: Callable[[Request], Response]):
        self.handler = handler
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))  # OSError: the caller says why, in one line
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.address = self._listener.getsockname()[:2]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._open: dict[socket.socket, _Connection] = {}  # reading a request, oldest first
        self._work: queue.Queue = queue.Queue(QUEUE)
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._read_loop, name="web", daemon=True)]
        self._threads += [
            threading.Thread(target=self._answer_loop, name=f"web-{i}", daemon=True) for i in range(WORKERS)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        for _ in range(WORKERS):
            try:
                self._work.put_nowait(None)
            except queue.Full:
                break
        self._threads[0].join(2)

    # -- reading (one thread) -------------------------------------------------------------

    def _read_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                for key, _ in self._selector.select(timeout=0.5):
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._read(self._open.get(key.fileobj))
                self._expire(time.monotonic())
            except Exception:  # a loop boundary: one bad connection never stops the endpoint
                log.exception("web endpoint: reading requests failed")
        for conn in list(self._open.values()):
            self._drop(conn)
        self._selector.unregister(self._listener)
        self._listener.close()

    def _accept(self) -> None:
        for _ in range(64):  # a burst, then back to the others
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors: wait for one to free
                return
            if len(self._open) >= MAX_CONNECTIONS:
                self._drop(next(iter(self._open.values())))  # the oldest still sending its request
            sock.setblocking(False)
            conn = _Connection(sock, f"{address[0]}:{address[1]}", time.monotonic())
            self._open[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ)

    def _read(self, conn: _Connection | None) -> None:
        if conn is None:
            return
        try:
            chunk = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(conn)
            return
        conn.data += chunk
        try:
            request = parse(bytes(conn.data), conn.client)
        except BadRequest as e:
            self._hand_over(conn, error(e.status, str(e)))
            return
        if request is not None:
            self._hand_over(conn, request)

    def _hand_over(self, conn: _Connection, item: Request | Response) -> None:
        self._selector.unregister(conn.sock)
        del self._open[conn.sock]
        try:
            self._work.put_nowait((conn, item))
        except queue.Full:
            self._reply_now(conn, error(503, "too busy, try again"))

    def _expire(self, now: float) -> None:
        for conn in list(self._open.values()):
            if now - conn.opened <= REQUEST_TIMEOUT:
                break  # the rest are younger
            self._selector.unregister(conn.sock)
            del self._open[conn.sock]
            self._reply_now(conn, error(408, "the request did not arrive in time"))

    @staticmethod
    def _reply_now(conn: _Connection, response: Response) -> None:
        """From the reading thread: what the socket takes now, never a wait."""
        try:
            conn.sock.send(response.encode())
        except OSError:
            pass
        conn.sock.close()

    def _drop(self, conn: _Connection) -> None:
        self._selector.unregister(conn.sock)
        self._open.pop(conn.sock, None)
        conn.sock.close()

    # -- answering (the workers) ----------------------------------------------------------

    def _answer_loop(self) -> None:
        while not self._stopping.is_set():
            item = self._work.get()
            if item is None:
                return
            conn, request = item
            if isinstance(request, Response):
                self._write(conn, request)
                continue
            try:
                response = self.handler(request)
            except Exception:  # a loop boundary: the client gets a 500, the endpoint goes on
                log.exception("web endpoint: %s %s failed", request.method, request.path)
                response = error(500, "internal error")
            self._write(conn, response)

    @staticmethod
    def _write(conn: _Connection, response: Response) -> None:
        try:
            conn.sock.setblocking(True)
            conn.sock.settimeout(SEND_TIMEOUT)  # a client that does not read loses its answer
            conn.sock.sendall(response.encode())
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            conn.sock.close()
