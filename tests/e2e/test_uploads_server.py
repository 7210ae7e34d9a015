"""
Uploads against real server processes: the default streaming server and
Daphne, under the product's default access policy (the session token).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time

import httpx
import pytest

from attachments.models import Attachment
from tests.servers import SERVER_KINDS

from .event_clients import create_session_with_auth

pytestmark = [
    pytest.mark.server,
    pytest.mark.django_db(transaction=True),
    pytest.mark.access_policy("token"),
]


@pytest.fixture(params=SERVER_KINDS)
def kind(request) -> str:
    return request.param


def manifest(warehouse, session_id: str) -> dict:
    path = warehouse / f"session_{session_id}/code_workspace/attachments/attachments_manifest.json"
    return json.loads(path.read_text())


def test_fifty_concurrent_uploads_to_one_session_are_all_recorded(server, kind, warehouse):
    contents = {f"file-{i:02d}.bin": os.urandom(20_000 + i * 1_000) for i in range(50)}

    async def upload_all(base_url: str, session_id: str, auth: dict) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(
            base_url=base_url, timeout=60, limits=limits, headers=auth
        ) as client:
            return await asyncio.gather(
                *(
                    client.post(f"/api/uploads/{session_id}", files={"file": (name, data)})
                    for name, data in contents.items()
                )
            )

    with server(kind) as s:
        session_id, auth = create_session_with_auth(s.url)
        responses = asyncio.run(upload_all(s.url, session_id, auth))
        assert [r.status_code for r in responses] == [201] * 50, [
            r.text for r in responses if r.status_code != 201
        ]
        listed = httpx.get(f"{s.url}/api/uploads/{session_id}", headers=auth).json()["attachments"]

    expected = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    assert {a["name"]: a["sha256"] for a in listed} == expected
    assert {
        a["name"]: a["sha256"] for a in manifest(warehouse, session_id)["attachments"]
    } == expected
    rows = Attachment.objects.filter(session__session_id=session_id)
    assert {a.name: a.sha256 for a in rows} == expected
    for attachment in rows:
        on_disk = (warehouse / f"session_{session_id}" / attachment.path).read_bytes()
        assert hashlib.sha256(on_disk).hexdigest() == attachment.sha256


def test_a_large_upload_arrives_intact(server, kind, warehouse):
    data = os.urandom(24 * 1024 * 1024 + 7)
    # Daphne buffers bodies, so it takes one this large only when told to.
    with server(kind, MAC_BUFFERED_BODY_MAX_BYTES=str(32 << 20)) as s:
        session_id, auth = create_session_with_auth(s.url)
        response = httpx.post(
            f"{s.url}/api/uploads/{session_id}",
            files={"file": ("big.bin", data)},
            headers=auth,
            timeout=60,
        )
    assert response.status_code == 201
    body = response.json()
    assert body["size"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert (warehouse / f"session_{session_id}" / body["path"]).read_bytes() == data


def test_over_the_limit_is_a_json_413_and_nothing_is_kept(server, kind, warehouse):
    with server(kind, MAC_MAX_UPLOAD_BYTES="100000") as s:
        session_id, auth = create_session_with_auth(s.url)
        response = httpx.post(
            f"{s.url}/api/uploads/{session_id}",
            files={"file": ("x.bin", b"x" * 100_001)},
            headers=auth,
        )
        assert response.status_code == 413
        assert response.json()["code"] == "upload_too_large"
        assert response.json()["limit_bytes"] == 100_000
        listed = httpx.get(f"{s.url}/api/uploads/{session_id}", headers=auth)
        assert listed.json()["attachments"] == []
    attachments = warehouse / f"session_{session_id}/code_workspace/attachments"
    assert [p.name for p in attachments.iterdir() if p.name.startswith("att_")] == []


def test_a_client_that_disconnects_mid_upload_leaves_nothing(server, kind, warehouse):
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    declared = len(head) + 10_000_000
    with server(kind) as s:
        session_id, auth = create_session_with_auth(s.url)
        port = int(s.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                (
                    f"POST /api/uploads/{session_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: {auth['Authorization']}\r\n"
                    f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                    f"Content-Length: {declared}\r\n\r\n"
                ).encode()
                + head
                + b"x" * 3_000_000
            )
            time.sleep(0.5)
        attachments = warehouse / f"session_{session_id}/code_workspace/attachments"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            p.name.startswith("att_") for p in attachments.iterdir()
        ):
            time.sleep(0.1)
        assert [p.name for p in attachments.iterdir() if p.name.startswith("att_")] == []
        listed = httpx.get(f"{s.url}/api/uploads/{session_id}", headers=auth)
        assert listed.json()["attachments"] == []
        # The server is still healthy.
        ok = httpx.post(
            f"{s.url}/api/uploads/{session_id}", files={"file": ("ok.txt", b"ok")}, headers=auth
        )
        assert ok.status_code == 201


def test_without_the_token_nothing_is_written(server, kind, warehouse):
    with server(kind) as s:
        session_id, _auth = create_session_with_auth(s.url)
        for headers in ({}, {"authorization": "Bearer not-the-token"}):
            response = httpx.post(
                f"{s.url}/api/uploads/{session_id}",
                files={"file": ("x.bin", b"x" * 2_000_000)},
                headers=headers,
            )
            assert response.status_code == 404
            assert response.json() == {"detail": "No such session.", "code": "session_not_found"}
    attachments = warehouse / f"session_{session_id}/code_workspace/attachments"
    assert [p.name for p in attachments.iterdir() if p.name.startswith("att_")] == []


@pytest.mark.access_policy("open")
def test_the_open_policy_is_logged_at_start_and_needs_only_the_id(server, kind):
    with server(kind) as s:
        session_id, _auth = create_session_with_auth(s.url)
        response = httpx.post(f"{s.url}/api/uploads/{session_id}", files={"file": ("a", b"a")})
        assert response.status_code == 201
        assert 'ATTACHMENTS_ACCESS_POLICY is "open"' in s.log()
