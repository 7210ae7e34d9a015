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

import httpx
import pytest
from tusclient import client as tus

from tests.servers import run_server

from .event_clients import create_session_with_auth

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]
CHUNK = 256 * 1024


def listed(base_url: str, session_id: str, auth: dict[str, str]) -> dict[str, dict]:
    reply = httpx.get(f"{base_url}/api/uploads/{session_id}", headers=auth, timeout=10)
    return {a["name"]: a for a in reply.json()["attachments"]}


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
    import socket
    import time
    from urllib.parse import urlsplit

    data = os.urandom(16 << 20)
    logs = tmp_path / "logs"
    # A nine-second lease: the PATCH renews it, and checkpoints, every three.
    with run_server("uvicorn", warehouse, logs, MAC_TUS_LEASE="9") as first:
        session_id, auth = create_session_with_auth(first.url)
        head = {**auth, "Tus-Resumable": "1.0.0"}
        created = httpx.post(
            f"{first.url}/api/uploads/{session_id}/tus/",
            headers={**head, "Upload-Length": str(len(data))},
            timeout=10,
        )
        location = created.headers["Location"]
        target = urlsplit(location)
        sent = checkpoint = 0
        with socket.create_connection((target.hostname, target.port)) as sock:
            sock.sendall(
                (
                    f"PATCH {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
                    f"Authorization: {auth['Authorization']}\r\nTus-Resumable: 1.0.0\r\n"
                    "Content-Type: application/offset+octet-stream\r\n"
                    f"Upload-Offset: 0\r\nContent-Length: {len(data)}\r\n\r\n"
                ).encode()
            )
            deadline = time.monotonic() + 20
            while not checkpoint and sent < len(data) // 2 and time.monotonic() < deadline:
                piece = data[sent : sent + (128 << 10)]
                sock.sendall(piece)
                sent += len(piece)
                time.sleep(0.1)
                reply = httpx.head(location, headers=head, timeout=10)
                checkpoint = int(reply.headers["Upload-Offset"])
            # Killed while the PATCH is still being sent.
            os.killpg(first.process.pid, signal.SIGKILL)
            first.process.wait(10)
        assert 0 < checkpoint <= sent < len(data)
    with run_server("uvicorn", warehouse, logs) as second:
        location = location.replace(first.url, second.url)
        reply = httpx.head(location, headers=head, timeout=10)
        assert int(reply.headers["Upload-Offset"]) == checkpoint
        # The killed PATCH's lease stands for seconds more, but its holder
        # died on this machine: the new server takes the upload over at once.
        finished = httpx.patch(
            location,
            content=data[checkpoint:],
            headers={
                **head,
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": str(checkpoint),
            },
            timeout=30,
        )
        assert finished.status_code == 204, finished.text
        attachment = next(iter(listed(second.url, session_id, auth).values()))
        assert attachment["sha256"] == hashlib.sha256(data).hexdigest()
        assert attachment["size"] == len(data)


def test_a_server_killed_while_recording_the_last_byte_records_it_when_it_restarts(
    warehouse, tmp_path
):
    """Every byte acknowledged, the attachment not yet committed: the restart records it."""
    import socket
    import time
    from urllib.parse import urlsplit

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
        head = {**auth, "Tus-Resumable": "1.0.0"}
        created = httpx.post(
            f"{first.url}/api/uploads/{session_id}/tus/",
            headers={**head, "Upload-Length": str(len(data))},
            timeout=10,
        )
        location = created.headers["Location"]
        target = urlsplit(location)
        with socket.create_connection((target.hostname, target.port)) as sock:
            sock.sendall(
                (
                    f"PATCH {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
                    f"Authorization: {auth['Authorization']}\r\nTus-Resumable: 1.0.0\r\n"
                    "Content-Type: application/offset+octet-stream\r\n"
                    f"Upload-Offset: 0\r\nContent-Length: {len(data)}\r\n\r\n"
                ).encode()
                + data
            )
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
        reply = httpx.head(location, headers=head, timeout=10)
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
    import socket
    import time
    from urllib.parse import urlsplit

    with server() as s:
        session_id, auth = create_session_with_auth(s.url)
        created = httpx.post(
            f"{s.url}/api/uploads/{session_id}/tus/",
            headers={**auth, "Tus-Resumable": "1.0.0", "Upload-Length": "600000"},
            timeout=10,
        )
        location = created.headers["Location"]
        sent = os.urandom(300_000)
        target = urlsplit(location)
        with socket.create_connection((target.hostname, target.port)) as sock:
            sock.sendall(
                (
                    f"PATCH {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
                    f"Authorization: {auth['Authorization']}\r\nTus-Resumable: 1.0.0\r\n"
                    "Content-Type: application/offset+octet-stream\r\n"
                    "Upload-Offset: 0\r\nContent-Length: 600000\r\n\r\n"
                ).encode()
                + sent
            )
        head = {**auth, "Tus-Resumable": "1.0.0"}
        deadline = time.monotonic() + 10
        offset = 0
        while time.monotonic() < deadline:
            offset = int(httpx.head(location, headers=head, timeout=10).headers["Upload-Offset"])
            if offset == len(sent):
                break
            time.sleep(0.05)
        assert offset == len(sent)
        rest = os.urandom(300_000)
        finished = httpx.patch(
            location,
            content=rest,
            headers={
                **head,
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": str(offset),
            },
            timeout=30,
        )
        assert finished.status_code == 204
        attachment = next(iter(listed(s.url, session_id, auth).values()))
        assert attachment["sha256"] == hashlib.sha256(sent + rest).hexdigest()


def test_a_slow_patch_renews_its_lease_and_keeps_the_upload(server):
    import socket
    import time
    from urllib.parse import urlsplit

    # A one-second lease, and a PATCH whose body takes about three to arrive.
    with server(MAC_TUS_LEASE="1") as s:
        session_id, auth = create_session_with_auth(s.url)
        data = os.urandom(3 << 20)
        created = httpx.post(
            f"{s.url}/api/uploads/{session_id}/tus/",
            headers={**auth, "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data))},
            timeout=10,
        )
        location = created.headers["Location"]
        target = urlsplit(location)
        head = {**auth, "Tus-Resumable": "1.0.0"}
        with socket.create_connection((target.hostname, target.port)) as sock:
            sock.sendall(
                (
                    f"PATCH {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
                    f"Authorization: {auth['Authorization']}\r\nTus-Resumable: 1.0.0\r\n"
                    "Content-Type: application/offset+octet-stream\r\n"
                    f"Upload-Offset: 0\r\nContent-Length: {len(data)}\r\n\r\n"
                ).encode()
            )
            piece = 256 * 1024
            for start in range(0, len(data), piece):
                sock.sendall(data[start : start + piece])
                time.sleep(0.25)
                if start == len(data) // 2:
                    # Past its first lease, the slow PATCH still holds the upload.
                    other = httpx.patch(
                        location,
                        content=b"x",
                        headers={
                            **head,
                            "Content-Type": "application/offset+octet-stream",
                            "Upload-Offset": "0",
                        },
                        timeout=10,
                    )
                    assert other.status_code == 423, other.text
            answer = sock.recv(65536).decode("latin-1")
        assert answer.startswith("HTTP/1.1 204"), answer
        attachment = next(iter(listed(s.url, session_id, auth).values()))
        assert attachment["sha256"] == hashlib.sha256(data).hexdigest()
