"""Real local HTTP peers that misbehave: hang, trickle, fail, send huge bodies.

Used by the tests (the `http_server` fixture) and by the benchmarks in bench/.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Peer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: list[tuple[float, str]] = []  # (monotonic time, path) per request
        self.headers_seen: list[dict] = []
        self.bodies: list[bytes] = []  # what /sink received
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address):
        pass  # peers that misbehave on purpose make their own connections fail

    def count(self, prefix: str = "/") -> int:
        with self.lock:
            return sum(1 for _, p in self.hits if p.startswith(prefix))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def finish(self):
        try:
            super().finish()
        except (OSError, ValueError):
            pass  # /reset closed the connection under our feet

    def do_GET(self):
        server: Peer = self.server
        with server.lock:
            server.hits.append((time.monotonic(), self.path))
            server.headers_seen.append(dict(self.headers))
        path, _, query = self.path.partition("?")
        route = getattr(self, "route_" + path.strip("/").split("/")[0], None)
        if route is None:
            return self.reply(404, b"no such route")
        route(query)

    do_POST = do_GET

    def reply(self, code: int, body: bytes, ctype: str = "text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def route_sink(self, query):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.bodies.append(body)
        self.reply(200, b"thanks")

    def route_ok(self, query):
        self.reply(200, b"all ok")

    def route_500(self, query):
        self.reply(500, b"boom")

    def route_json(self, query):
        self.reply(200, b'{"status": "ok", "data": {"count": 3, "items": [1, 2]}}', "application/json")

    def route_slow(self, query):
        time.sleep(float(query or 0.2))
        self.reply(200, b"slow ok")

    def route_hang(self, query):
        self.server.stopping.wait(600)  # accepts, never answers

    def route_trickle(self, query):
        """Headers, then a body one byte every 300 ms, for ever."""
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        while not self.server.stopping.wait(0.3):
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:
                return

    def route_trickleheaders(self, query):
        """The status line and headers one byte every 300 ms."""
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 1000:
            if self.server.stopping.wait(0.3):
                return
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return

    def route_reset(self, query):
        """Half a body, then a TCP reset (SO_LINGER 0)."""
        import socket
        import struct

        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"r" * 50000)
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # the socket really closes (and resets) only once its file objects are closed too
        self.wfile.close()
        self.rfile.close()
        self.connection.close()

    def route_garbage(self, query):
        self.wfile.write(b"this is not HTTP at all\r\n\r\n\x00\xff")
        self.wfile.flush()
        self.close_connection = True

    def route_redirect(self, query):
        n = int(query or 0) + 1
        self.send_response(302)
        self.send_header("Location", f"/redirect?{n}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def route_big(self, query):
        """A 10 GB body (declared, or with query "chunked": not declared)."""
        self.send_response(200)
        if query != "undeclared":
            self.send_header("Content-Length", str(10 * 10**9))
        else:
            self.close_connection = True
        self.end_headers()
        chunk = b"z" * 65536
        try:
            while not self.server.stopping.is_set():
                self.wfile.write(chunk)
        except OSError:
            return


def start_peer() -> Peer:
    server = Peer()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def stop_peer(server: Peer) -> None:
    server.stopping.set()
    server.shutdown()
    server.server_close()
