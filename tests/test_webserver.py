"""The web transport alone, in this process, with its bounds made small."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from beaconlite import webserver
from beaconlite.webserver import Response, Server, parse


@pytest.fixture
def server(monkeypatch):
    started = []

    def make(handler=None, **bounds):
        for name, value in bounds.items():
            monkeypatch.setattr(webserver, name, value)
        s = Server(
            "127.0.0.1", 0, handler or (lambda request: Response(200, request.path.encode(), "text/plain"))
        )
        s.start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def ask(address, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def test_a_request_that_never_finishes_gets_408_in_time(server):
    s = server(REQUEST_TIMEOUT=0.5)
    t0 = time.monotonic()
    assert ask(s.address, b"GET / HTTP/1.1\r\nHost: x\r\n").startswith(b"HTTP/1.1 408")
    assert time.monotonic() - t0 < 2.0


def test_when_full_the_oldest_unfinished_connection_makes_room(server):
    s = server(MAX_CONNECTIONS=5)
    hogs = [socket.create_connection(s.address, timeout=5) for _ in range(5)]
    for h in hogs:
        h.sendall(b"GET / HTT")  # never finished
    try:
        assert ask(s.address, b"GET /hello HTTP/1.1\r\n\r\n").endswith(b"/hello")
        hogs[0].settimeout(2)
        try:  # the oldest lost its place: closed, or reset when its bytes were still unread
            assert hogs[0].recv(100) == b""
        except ConnectionResetError:
            pass
    finally:
        for h in hogs:
            h.close()


def test_busy_workers_answer_503_not_a_pile_up(server):
    gate = threading.Event()

    def slow(request):
        gate.wait(5)
        return Response(200, b"done", "text/plain")

    s = server(slow, WORKERS=1, QUEUE=1)
    try:
        first = threading.Thread(target=ask, args=(s.address, b"GET / HTTP/1.1\r\n\r\n"))
        first.start()
        time.sleep(0.2)
        second = threading.Thread(target=ask, args=(s.address, b"GET / HTTP/1.1\r\n\r\n"))
        second.start()
        time.sleep(0.2)
        assert ask(s.address, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 503")
    finally:
        gate.set()


def test_a_handler_that_raises_is_a_500_and_the_server_goes_on(server):
    def broken(request):
        raise RuntimeError("boom")

    s = server(broken)
    assert ask(s.address, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 500")
    assert ask(s.address, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 500")


@pytest.mark.parametrize(
    "data, status",
    [
        (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 413),
        (b"GET http://x/ HTTP/1.1\r\n\r\n", 400),
        (b"G\xc3\xa9T / HTTP/1.1\r\n\r\n", 400),
        (b"GET / SPDY/3\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n: empty name\r\n\r\n", 400),
    ],
)
def test_parse_refuses_what_it_does_not_answer(data, status):
    with pytest.raises(webserver.BadRequest) as caught:
        parse(data, "client")
    assert caught.value.status == status


def test_parse_reads_query_and_body():
    request = parse(b"POST /a%20b?x=1&x=2&y= HTTP/1.1\r\nContent-Length: 3\r\nHost: h\r\n\r\nabcdef", "c")
    assert (request.method, request.path, request.query, request.body) == (
        "POST",
        "/a b",
        {"x": "2", "y": ""},
        b"abc",
    )
    assert parse(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", "c") is None  # more to come
