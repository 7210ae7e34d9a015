"""
The default server (macproject.server, as scripts/serve runs it) against
slow and oversized clients on raw sockets: headers that trickle, a body that
stalls, a kept-alive connection left idle, a megabyte of headers.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.servers import DEFAULT_SERVER

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

LIMITS = {
    "MAC_HEADER_TIMEOUT": "1",
    "MAC_BODY_IDLE_TIMEOUT": "1",
    "MAC_KEEP_ALIVE_TIMEOUT": "1",
    "MAC_MAX_HEADER_BYTES": "16384",
}
# How long a test waits for the server to act: far above the limits, so a
# pass never depends on timing, yet a server without the limit fails.
PATIENCE = 15


@pytest.fixture
def limited(server):
    with server(DEFAULT_SERVER, **LIMITS) as running:
        yield running


def connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=PATIENCE)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or PATIENCE passes)."""
    received = b""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received  # closed with unread data: a reset is a close too
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the server kept the connection open; got {received[:200]!r}")


def json_body(response: bytes) -> dict:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


def test_headers_that_never_finish_get_408_and_a_closed_connection(limited):
    with connect(limited) as sock:
        sock.sendall(b"GET /api/limits HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 408 ")
    assert json_body(response)["code"] == "request_timeout"


def test_a_connection_that_sends_nothing_is_closed(limited):
    with connect(limited) as sock:
        response = read_until_closed(sock)
    assert response == b"" or response.startswith(b"HTTP/1.1 408 ")


def test_a_body_that_stalls_closes_the_connection(limited):
    with connect(limited) as sock:
        sock.sendall(
            b"POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a"'
        )
        response = read_until_closed(sock)
    # No session was created from half a body: no 201.
    assert b" 201 " not in response


def test_an_idle_kept_alive_connection_is_closed(limited):
    with connect(limited) as sock:
        sock.sendall(b"GET /api/limits HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 200 ")


def test_headers_over_the_limit_get_431(limited):
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(20))
    with connect(limited) as sock:
        sock.sendall(b"GET /api/limits HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n")
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 431 ")
    assert json_body(response)["code"] == "headers_too_large"


def test_a_megabyte_of_headers_is_refused(limited):
    with connect(limited) as sock:
        sock.sendall(b"GET /api/limits HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for index in range(1024):
                sock.sendall(b"X-Filler-%d: %s\r\n" % (index, b"a" * 1000))
            sock.sendall(b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection before the end, as it should
        response = read_until_closed(sock)
    # The 431 may be lost to the reset of a connection closed with unread
    # data; what matters is that the request was never served.
    assert response == b"" or response.startswith(b"HTTP/1.1 431 "), response[:100]


def test_ordinary_requests_still_work(limited):
    with connect(limited) as sock:
        body = b"{}"
        sock.sendall(
            b"POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 201 ")
