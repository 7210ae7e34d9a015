"""
Resumable uploads written through several server processes sharing
PostgreSQL, as in production: the lease in the upload's row makes one PATCH
at a time the writer whichever process it reaches, and a writer killed with
SIGKILL frees the upload once its lease has run out. Each PATCH is answered
before its bytes are fsync'd; the next one, on another process of the same
machine, finds them in the page cache they share.
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

from attachments.models import ResumableUpload

pytestmark = [pytest.mark.server, pytest.mark.services, pytest.mark.django_db(transaction=True)]
TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = 1 << 20


def create_upload(base_url: str, length: int) -> tuple[str, dict[str, str]]:
    reply = httpx.post(f"{base_url}/api/sessions", json={}, timeout=10).json()
    auth = {"Authorization": f"Bearer {reply['token']}"}
    created = httpx.post(
        f"{base_url}/api/uploads/{reply['session_id']}/tus/",
        headers={**auth, **TUS, "Upload-Length": str(length)},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    return urlsplit(created.headers["Location"]).path, auth


def patch(base_url: str, path: str, auth: dict[str, str], offset: int, body: bytes):
    return httpx.patch(
        base_url + path,
        content=body,
        headers={
            **auth,
            **TUS,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
        },
        timeout=60,
    )


def start_patch(
    base_url: str, path: str, auth: dict[str, str], offset: int, length: int, first: bytes
) -> socket.socket:
    """A PATCH whose body has begun to arrive (`first`) and waits for the rest."""
    target = urlsplit(base_url)
    sock = socket.create_connection((target.hostname, target.port))
    sock.sendall(
        (
            f"PATCH {path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
            f"Authorization: {auth['Authorization']}\r\nTus-Resumable: 1.0.0\r\n"
            "Content-Type: application/offset+octet-stream\r\n"
            f"Upload-Offset: {offset}\r\nContent-Length: {length}\r\n\r\n"
        ).encode()
        + first
    )
    return sock


def wait_until_leased(path: str) -> ResumableUpload:
    upload_id = path.rstrip("/").rsplit("/", 1)[1]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        upload = ResumableUpload.objects.get(upload_id=upload_id)
        if upload.lease_token:
            return upload
        time.sleep(0.02)
    raise AssertionError("The first PATCH never took the upload")


def finished_sha256(base_url: str, path: str, auth: dict[str, str]) -> str:
    session_id = path.split("/")[3]
    listed = httpx.get(f"{base_url}/api/uploads/{session_id}", headers=auth, timeout=10).json()
    (attachment,) = listed["attachments"]
    return attachment["sha256"]


def test_two_patches_through_two_processes_one_writes_the_other_is_refused(server):
    data = os.urandom(2 * CHUNK)
    with server() as a, server() as b:
        path, auth = create_upload(a.url, len(data))
        holder = start_patch(a.url, path, auth, 0, CHUNK, data[: CHUNK // 2])
        with holder:
            wait_until_leased(path)
            refused = patch(b.url, path, auth, 0, data[:CHUNK])
            assert refused.status_code == 423, refused.text
            assert refused.json()["code"] == "upload_locked"
            head = httpx.head(b.url + path, headers={**auth, **TUS}, timeout=10)
            assert head.headers["Upload-Offset"] == "0"
            holder.sendall(data[CHUNK // 2 : CHUNK])
            answer = holder.recv(65536).decode("latin-1")
        assert answer.startswith("HTTP/1.1 204"), answer
        assert "upload-offset: 1048576" in answer.lower()
        # The refused PATCH, retried as it was, is now at the wrong offset.
        late = patch(b.url, path, auth, 0, data[:CHUNK])
        assert (late.status_code, late.json()["offset"]) == (409, CHUNK)
        assert patch(b.url, path, auth, CHUNK, data[CHUNK:]).status_code == 204
        assert finished_sha256(b.url, path, auth) == hashlib.sha256(data).hexdigest()


def test_patches_alternating_between_processes_at_once_build_the_file(server):
    data = os.urandom(16 * CHUNK + 777)
    headers = {**TUS, "Content-Type": "application/offset+octet-stream"}
    with server() as a, server() as b, httpx.Client() as to_a, httpx.Client() as to_b:
        path, auth = create_upload(a.url, len(data))
        for number, offset in enumerate(range(0, len(data), CHUNK)):
            # Each sent the moment the previous answer came, on a connection
            # already open to the other process, while that one syncs.
            to, base = ((to_a, a.url), (to_b, b.url))[number % 2]
            reply = to.patch(
                base + path,
                content=data[offset : offset + CHUNK],
                headers={**auth, **headers, "Upload-Offset": str(offset)},
                timeout=60,
            )
            assert reply.status_code == 204, reply.text
        assert finished_sha256(b.url, path, auth) == hashlib.sha256(data).hexdigest()
    upload = ResumableUpload.objects.get()
    assert (upload.offset, upload.synced_offset, upload.unsynced_on) == (len(data),) * 2 + ("",)


def test_a_writer_killed_mid_patch_on_this_machine_is_taken_over_at_once(server):
    data = os.urandom(3 * CHUNK)
    with server() as a, server() as b:
        path, auth = create_upload(a.url, len(data))
        assert patch(a.url, path, auth, 0, data[:CHUNK]).status_code == 204
        # Half of the second chunk reaches a, which dies holding the upload for 30 s.
        with start_patch(a.url, path, auth, CHUNK, CHUNK, data[CHUNK : CHUNK + CHUNK // 2]):
            wait_until_leased(path)
            os.killpg(a.process.pid, signal.SIGKILL)
            a.process.wait(10)
        head = httpx.head(b.url + path, headers={**auth, **TUS}, timeout=10)
        assert int(head.headers["Upload-Offset"]) == CHUNK  # the dead writer's half never counted
        # b sees that a died: no 423, no waiting for the lease.
        assert patch(b.url, path, auth, CHUNK, data[CHUNK:]).status_code == 204
        assert finished_sha256(b.url, path, auth) == hashlib.sha256(data).hexdigest()


def test_a_writer_killed_mid_patch_on_another_machine_frees_the_upload_when_its_lease_ends(
    server,
):
    lease = 4
    data = os.urandom(3 * CHUNK)
    with server(MAC_TUS_LEASE=str(lease)) as a, server(MAC_TUS_LEASE=str(lease)) as b:
        path, auth = create_upload(a.url, len(data))
        assert patch(a.url, path, auth, 0, data[:CHUNK]).status_code == 204
        # Half of the second chunk reaches a, which dies holding the upload.
        with start_patch(a.url, path, auth, CHUNK, CHUNK, data[CHUNK : CHUNK + CHUNK // 2]):
            leased = wait_until_leased(path)
            os.killpg(a.process.pid, signal.SIGKILL)
            a.process.wait(10)
        killed_at = time.monotonic()
        # As a holder on another host would be named: nobody here can tell it died.
        ResumableUpload.objects.filter(pk=leased.pk).update(lease_holder="another-host/1/1/1")
        assert leased.lease_expires_at is not None
        first_try = patch(b.url, path, auth, CHUNK, data[CHUNK : 2 * CHUNK])
        if time.monotonic() - killed_at < lease * 2 / 3:
            assert first_try.status_code == 423, first_try.text
        # A client resumes as tus clients do: HEAD, then PATCH from the offset.
        deadline = killed_at + lease + 10
        while True:
            head = httpx.head(b.url + path, headers={**auth, **TUS}, timeout=10)
            offset = int(head.headers["Upload-Offset"])
            assert offset in (CHUNK, 2 * CHUNK)  # the dead writer's half was never acknowledged
            resumed = patch(b.url, path, auth, offset, data[offset : 2 * CHUNK])
            if resumed.status_code == 204 or offset == 2 * CHUNK:
                break
            assert resumed.status_code == 423, resumed.text
            assert time.monotonic() < deadline, "the dead writer's lease never ended"
            time.sleep(0.25)
        assert patch(b.url, path, auth, 2 * CHUNK, data[2 * CHUNK :]).status_code == 204
        assert finished_sha256(b.url, path, auth) == hashlib.sha256(data).hexdigest()
