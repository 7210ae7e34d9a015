"""
Resumable uploads against a real server with a real tus client (tuspy): an
upload whose server is killed half-way resumes, on a new server process, to
the same sha256, and so does one killed in the middle of a single long PATCH;
checksums are sent by the client and verified.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
from tusclient import client as tus

from tests.servers import run_server

from .event_clients import create_session_with_auth

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]
CHUNK = 256 * 1024
TUS = {"Tus-Resumable": "1.0.0"}


def listed(base_url: str, session_id: str, auth: dict[str, str]) -> dict[str, dict]:
    reply = httpx.get(f"{base_url}/api/uploads/{session_id}", headers=auth, timeout=10)
    return {a["name"]: a for a in reply.json()["attachments"]}


def create_upload(base_url: str, session_id: str, auth: dict[str, str], length: int) -> str:
    """A new tus upload of `length` bytes: its URL."""
    created = httpx.post(
        f"{base_url}/api/uploads/{session_id}/tus/",
        headers={**auth, **TUS, "Upload-Length": str(length)},
        timeout=10,
    )
    return created.headers["Location"]


def send_patch(
    location: str, auth: dict[str, str], offset: int, body: bytes, timeout: float = 30
) -> httpx.Response:
    return httpx.patch(
        location,
        content=body,
        headers={
            **auth,
            **TUS,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
        },
        timeout=timeout,
    )


def start_patch(location: str, auth: dict[str, str], offset: int, length: int) -> socket.socket:
    """A raw connection that has sent a PATCH's head: its `length` body bytes are the caller's."""
    target = urlsplit(location)
    sock = socket.create_connection((target.hostname, target.port))
    sock.sendall(
        (
            f"PATCH {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
            f"Authorization: {auth['Authorization']}\r\nTus-Resumable: 1.0.0\r\n"
            "Content-Type: application/offset+octet-stream\r\n"
            f"Upload-Offset: {offset}\r\nContent-Length: {length}\r\n\r\n"
        ).encode()
    )
    return sock


def test_an_upload_interrupted_by_a_killed_server_resumes_to_the_same_bytes(warehouse, tmp_path):
    source = tmp_path / "big.bin"
    data = os.urandom(8 * CHUNK + 12345)
    source.write_bytes(data)
    logs = tmp_path / "logs"
    with run_server("uvicorn", warehouse, logs) as first:
        session_id, auth = create_session_with_auth(first.url)
        client = tus.TusClient(f"{first.url}/api/uploads/{session_id}/tus/", headers=auth)
        uploader = client.uploader(
            str(source), chunk_size=CHUNK, upload_checksum=True, metadata={"filename": "big.bin"}
        )
        for _ in range(3):
            uploader.upload_chunk()
        url = uploader.url
        assert uploader.offset == 3 * CHUNK
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
    with run_server("uvicorn", warehouse, logs) as second:
        new_url = url.replace(first.url, second.url)
        client = tus.TusClient(f"{second.url}/api/uploads/{session_id}/tus/", headers=auth)
        resumed = client.uploader(str(source), url=new_url, chunk_size=CHUNK, upload_checksum=True)
        assert resumed.offset == 3 * CHUNK  # asked the server with HEAD
        resumed.upload()
        attachment = listed(second.url, session_id, auth)["big.bin"]
        assert attachment["sha256"] == hashlib.sha256(data).hexdigest()
        assert attachment["size"] == len(data)
        streamed = httpx.get(
            f"{second.url}/api/sessions/{session_id}/artifacts/{attachment['attachment_id']}",
            params={"mode": "stream"},
            headers=auth,
            timeout=30,
        )
        assert streamed.content == data


def test_a_server_killed_during_one_long_patch_keeps_what_the_patch_had_checkpointed(
    warehouse, tmp_path
):
    """One PATCH for the whole file (tus-js-client's default): a crash costs seconds, not all."""
    data = os.urandom(16 << 20)
    logs = tmp_path / "logs"
    # A nine-second lease: the PATCH renews it, and checkpoints, every three.
    with run_server("uvicorn", warehouse, logs, MAC_TUS_LEASE="9") as first:
        session_id, auth = create_session_with_auth(first.url)
        location = create_upload(first.url, session_id, auth, len(data))
        sent = checkpoint = 0
        with start_patch(location, auth, 0, len(data)) as sock:
            deadline = time.monotonic() + 20
            while not checkpoint and sent < len(data) // 2 and time.monotonic() < deadline:
                piece = data[sent : sent + (128 << 10)]
                sock.sendall(piece)
                sent += len(piece)
                time.sleep(0.1)
                reply = httpx.head(location, headers={**auth, **TUS}, timeout=10)
                checkpoint = int(reply.headers["Upload-Offset"])
            # Killed while the PATCH is still being sent.
            os.killpg(first.process.pid, signal.SIGKILL)
            first.process.wait(10)
        assert 0 < checkpoint <= sent < len(data)
    with run_server("uvicorn", warehouse, logs) as second:
        location = location.replace(first.url, second.url)
        reply = httpx.head(location, headers={**auth, **TUS}, timeout=10)
        assert int(reply.headers["Upload-Offset"]) == checkpoint
        # The killed PATCH's lease stands for seconds more, but its holder
        # died on this machine: the new server takes the upload over at once.
        finished = send_patch(location, auth, checkpoint, data[checkpoint:])
        assert finished.status_code == 204, finished.text
        attachment = next(iter(listed(second.url, session_id, auth).values()))
        assert attachment["sha256"] == hashlib.sha256(data).hexdigest()
        assert attachment["size"] == len(data)


def test_a_server_killed_while_recording_the_last_byte_records_it_when_it_restarts(
    warehouse, tmp_path
):
    """Every byte acknowledged, the attachment not yet committed: the restart records it."""
    hold = tmp_path / "hold"
    hold.touch()
    scanner = {
        "MAC_UPLOAD_SCANNERS": "tests.e2e.held_scanner.scan",
        "MAC_TEST_HOLD_SCAN": str(hold),
    }
    data = os.urandom(3 * CHUNK)
    logs = tmp_path / "logs"
    with run_server("uvicorn", warehouse, logs, **scanner) as first:
        session_id, auth = create_session_with_auth(first.url)
        location = create_upload(first.url, session_id, auth, len(data))
        with start_patch(location, auth, 0, len(data)) as sock:
            sock.sendall(data)
            # Every byte is in and its offset committed; the scanner holds the
            # recording, and the server dies there, before the 204.
            waiting = tmp_path / "hold.waiting"
            deadline = time.monotonic() + 20
            while not waiting.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert waiting.exists()
            os.killpg(first.process.pid, signal.SIGKILL)
            first.process.wait(10)
    hold.unlink()
    with run_server("uvicorn", warehouse, logs, MAC_RECONCILE_AT_START="1", **scanner) as second:
        location = location.replace(first.url, second.url)
        deadline = time.monotonic() + 20
        while not (found := listed(second.url, session_id, auth)) and time.monotonic() < deadline:
            time.sleep(0.1)  # reconciliation at start runs beside the server
        (attachment,) = found.values()
        assert attachment["sha256"] == hashlib.sha256(data).hexdigest()
        reply = httpx.head(location, headers={**auth, **TUS}, timeout=10)
        assert int(reply.headers["Upload-Offset"]) == len(data)
        assert reply.headers["Attachment-Id"] == attachment["attachment_id"]


def test_a_whole_upload_with_tuspy_in_one_go(server, tmp_path):
    source = tmp_path / "notes.md"
    source.write_bytes(b"# Notes\n" * 5000)
    with server() as s:
        session_id, auth = create_session_with_auth(s.url)
        client = tus.TusClient(f"{s.url}/api/uploads/{session_id}/tus/", headers=auth)
        client.uploader(
            str(source), chunk_size=16 * 1024, metadata={"filename": "notes.md"}
        ).upload()
        attachment = listed(s.url, session_id, auth)["notes.md"]
        assert attachment["mime"] == "text/markdown"
        assert attachment["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


def test_an_interrupted_patch_keeps_every_byte_that_arrived(server):
    with server() as s:
        session_id, auth = create_session_with_auth(s.url)
        location = create_upload(s.url, session_id, auth, 600_000)
        sent = os.urandom(300_000)
        with start_patch(location, auth, 0, 600_000) as sock:
            sock.sendall(sent)
        deadline = time.monotonic() + 10
        offset = 0
        while time.monotonic() < deadline:
            reply = httpx.head(location, headers={**auth, **TUS}, timeout=10)
            offset = int(reply.headers["Upload-Offset"])
            if offset == len(sent):
                break
            time.sleep(0.05)
        assert offset == len(sent)
        rest = os.urandom(300_000)
        finished = send_patch(location, auth, offset, rest)
        assert finished.status_code == 204
        attachment = next(iter(listed(s.url, session_id, auth).values()))
        assert attachment["sha256"] == hashlib.sha256(sent + rest).hexdigest()


def test_a_slow_patch_renews_its_lease_and_keeps_the_upload(server):
    # A one-second lease, and a PATCH whose body takes about three to arrive.
    with server(MAC_TUS_LEASE="1") as s:
        session_id, auth = create_session_with_auth(s.url)
        data = os.urandom(3 << 20)
        location = create_upload(s.url, session_id, auth, len(data))
        with start_patch(location, auth, 0, len(data)) as sock:
            piece = 256 * 1024
            for start in range(0, len(data), piece):
                sock.sendall(data[start : start + piece])
                time.sleep(0.25)
                if start == len(data) // 2:
                    # Past its first lease, the slow PATCH still holds the upload.
                    other = send_patch(location, auth, 0, b"x", timeout=10)
                    assert other.status_code == 423, other.text
            answer = sock.recv(65536).decode("latin-1")
        assert answer.startswith("HTTP/1.1 204"), answer
        attachment = next(iter(listed(s.url, session_id, auth).values()))
        assert attachment["sha256"] == hashlib.sha256(data).hexdigest()
