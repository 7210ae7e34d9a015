"""
Under Daphne, which reads (and has Twisted parse) a whole body before the
application sees it, one request must not be able to exhaust the server's
memory: bodies over ATTACHMENTS_BUFFERED_BODY_MAX_BYTES are refused with a
JSON 413 as soon as their length is known, /api/limits says so, and large
files still go through in tus chunks.
"""

from __future__ import annotations

import hashlib
import os
import socket

import httpx
import pytest
from tusclient import client as tus

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]
LIMIT = 1 << 20


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def test_daphne_refuses_over_long_bodies_before_reading_them(server, tmp_path):
    with server("daphne", MAC_BUFFERED_BODY_MAX_BYTES=str(LIMIT)) as s:
        limits = httpx.get(f"{s.url}/api/limits").json()
        assert (limits["max_request_bytes"], limits["max_upload_bytes"]) == (LIMIT, LIMIT)
        session_id = httpx.post(f"{s.url}/api/sessions", json={}).json()["session_id"]
        before = peak_rss_mib(s.process.pid)

        # 200 MiB announced and sent: answered at once, and never held.
        size = 200 << 20
        head = (
            f"POST /api/uploads/{session_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: multipart/form-data; boundary=xyz\r\n"
            f"Content-Length: {size}\r\n\r\n"
        ).encode()
        host, port = s.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(head)
            sent = 0
            chunk = b"x" * (1 << 20)
            try:
                while sent < size:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            sock.settimeout(10)
            reply = b""
            try:
                while data := sock.recv(65536):
                    reply += data
            except (ConnectionResetError, TimeoutError):
                pass
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b'"code": "upload_too_large"' in reply
        assert peak_rss_mib(s.process.pid) - before < 64

        # Within the limit, an upload works as anywhere.
        small = httpx.post(
            f"{s.url}/api/uploads/{session_id}", files={"file": ("small.txt", b"fits" * 1000)}
        )
        assert small.status_code == 201

        # A large file goes through in chunks the server takes.
        data = os.urandom(3 * LIMIT)
        path = tmp_path / "big.bin"
        path.write_bytes(data)
        client = tus.TusClient(f"{s.url}/api/uploads/{session_id}/tus/")
        client.uploader(str(path), chunk_size=LIMIT // 2, metadata={"filename": "big.bin"}).upload()
        listed = httpx.get(f"{s.url}/api/uploads/{session_id}").json()["attachments"]
        assert {a["name"]: a["sha256"] for a in listed}["big.bin"] == hashlib.sha256(
            data
        ).hexdigest()


def test_a_streaming_server_has_no_request_limit(server):
    with server("uvicorn") as s:
        limits = httpx.get(f"{s.url}/api/limits").json()
        assert limits["max_request_bytes"] is None


def test_a_slow_client_of_a_large_download_does_not_fill_daphnes_memory(server, tmp_path):
    import time

    size = 192 << 20
    data = os.urandom(1 << 20) * 192
    path = tmp_path / "large.bin"
    path.write_bytes(data)
    with server("daphne") as s:
        session_id = httpx.post(f"{s.url}/api/sessions", json={}).json()["session_id"]
        client = tus.TusClient(f"{s.url}/api/uploads/{session_id}/tus/")
        client.uploader(str(path), chunk_size=8 << 20, metadata={"filename": "large.bin"}).upload()
        (attachment,) = httpx.get(f"{s.url}/api/uploads/{session_id}").json()["attachments"]
        before = peak_rss_mib(s.process.pid)
        host, port = s.url.removeprefix("http://").split(":")
        digest = hashlib.sha256()
        with socket.create_connection((host, int(port))) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(
                (
                    f"GET /api/sessions/{session_id}/artifacts/{attachment['attachment_id']}"
                    "?mode=stream HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                ).encode()
            )
            # A client that reads nothing for a while: without back-pressure the
            # server would queue the whole file for it meanwhile.
            time.sleep(3)
            stalled = peak_rss_mib(s.process.pid) - before
            received = b""
            while b"\r\n\r\n" not in received:
                received += sock.recv(65536)
            body = received.split(b"\r\n\r\n", 1)[1]
            digest.update(body)
            total = len(body)
            while chunk := sock.recv(1 << 20):
                digest.update(chunk)
                total += len(chunk)
        assert total == size and digest.hexdigest() == hashlib.sha256(data).hexdigest()
        assert stalled < 64, f"Daphne grew {stalled:.0f} MiB for one stalled download"
