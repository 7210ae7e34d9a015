"""
File bodies sent around Django (`attachments.file_body_middleware.FileBodyMiddleware`):
with the server's `http.response.pathsend` under Granian, in large reads
under the others; whole files and ranges arrive intact, and no file stays open.
"""

from __future__ import annotations

import hashlib
import os
import time

import httpx
import pytest

from attachments.file_body_middleware import PATHSEND_HOLD_SECONDS

from .event_clients import create_session, upload_file
from .test_downloads_server import open_warehouse_files

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]


def server_pid(s) -> int:
    """The process that runs the application (Granian's worker is its main process's child)."""
    if s.kind != "granian":
        return s.process.pid
    children = open(f"/proc/{s.process.pid}/task/{s.process.pid}/children").read().split()
    return int(children[0])


@pytest.mark.parametrize("kind", ["granian", "uvicorn", "daphne"])
def test_whole_files_and_ranges_arrive_intact_and_nothing_stays_open(server, kind, warehouse):
    data = os.urandom(24 * 1024 * 1024 + 5)
    # Daphne buffers request bodies, so it takes this upload only when told to.
    with server(kind, MAC_BUFFERED_BODY_MAX_BYTES=str(32 << 20)) as s:
        session_id = create_session(s.url)
        item = upload_file(s.url, session_id, "big.bin", data)
        url = f"{s.url}/api/sessions/{session_id}/artifacts/{item['attachment_id']}?mode=stream"
        with httpx.Client(timeout=60) as client:
            for _ in range(3):
                whole = client.get(url)
                assert whole.status_code == 200
                assert int(whole.headers["content-length"]) == len(data)
                assert hashlib.sha256(whole.content).digest() == hashlib.sha256(data).digest()
                assert "x-mac-file-body" not in whole.headers
            ranged = client.get(url, headers={"Range": "bytes=5000000-20000000"})
            assert ranged.status_code == 206
            assert ranged.content == data[5_000_000:20_000_001]
            head = client.head(url)
            assert (head.status_code, head.content) == (200, b"")
            assert head.headers["content-length"] == str(len(data))
            cached = client.get(url, headers={"If-None-Match": whole.headers["etag"]})
            assert (cached.status_code, cached.content) == (304, b"")
        empty = upload_file(s.url, session_id, "empty.txt", b"")
        empty_url = url.replace(item["attachment_id"], empty["attachment_id"])
        assert httpx.get(empty_url).content == b""
        pid = server_pid(s)
        # Granian's pathsend descriptors are held a while after the response.
        deadline = time.monotonic() + PATHSEND_HOLD_SECONDS + 10
        while open_warehouse_files(pid, warehouse) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert open_warehouse_files(pid, warehouse) == []
