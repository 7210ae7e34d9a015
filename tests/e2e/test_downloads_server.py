"""Downloads against real server processes: the default streaming server and Daphne."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import httpx
import pytest

from tests.attachments.builders import directory_hashes, zip_hashes
from tests.servers import SERVER_KINDS

from .event_clients import create_session, upload_file

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]


@pytest.fixture(params=SERVER_KINDS)
def kind(request) -> str:
    return request.param


def open_warehouse_files(pid: int, warehouse: Path) -> list[str]:
    fds = Path(f"/proc/{pid}/fd")
    targets = []
    for fd in fds.iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:
            continue
    return [t for t in targets if t.startswith(str(warehouse.resolve()))]


def test_stream_with_ranges_and_the_session_zip(server, kind, warehouse, tmp_path):
    data = os.urandom(5 * 1024 * 1024 + 11)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"must never be served")
    with server(kind) as s:
        session_id = create_session(s.url)
        item = upload_file(s.url, session_id, "big.bin", data)
        upload_file(s.url, session_id, "notes.md", b"# notes\n" * 2000)
        session_dir = warehouse / f"session_{session_id}"
        (session_dir / "code_workspace" / "leak.txt").symlink_to(secret)
        url = f"{s.url}/api/sessions/{session_id}/artifacts/{item['attachment_id']}?mode=stream"

        whole = httpx.get(url, timeout=60)
        assert whole.status_code == 200
        assert whole.content == data
        assert whole.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'

        start, end = 1_048_570, 3_000_000
        ranged = httpx.get(url, headers={"Range": f"bytes={start}-{end}"}, timeout=60)
        assert ranged.status_code == 206
        assert ranged.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
        assert ranged.content == data[start : end + 1]
        assert httpx.get(url, headers={"Range": "bytes=-7"}).content == data[-7:]

        compressed = httpx.get(f"{s.url}/api/sessions/{session_id}/download", timeout=60)
        assert compressed.status_code == 200
        stored = httpx.get(f"{s.url}/api/sessions/{session_id}/download?compress=false", timeout=60)
        assert int(stored.headers["content-length"]) == len(stored.content)
        cut = len(stored.content) // 2
        resumed = httpx.get(
            f"{s.url}/api/sessions/{session_id}/download?compress=false",
            headers={"Range": f"bytes={cut}-", "If-Range": stored.headers["etag"]},
            timeout=60,
        )
        assert resumed.status_code == 206

    expected = directory_hashes(session_dir)
    assert "code_workspace/leak.txt" not in expected
    assert zip_hashes(compressed.content) == expected
    assert zip_hashes(stored.content) == expected
    assert stored.content[:cut] + resumed.content == stored.content
    assert b"must never be served" not in compressed.content + stored.content


def test_a_client_that_leaves_mid_download_leaves_no_file_open(server, kind, warehouse):
    with server(kind) as s:
        session_id = create_session(s.url)
        item = upload_file(s.url, session_id, "big.bin", os.urandom(12 * 1024 * 1024))
        url = f"{s.url}/api/sessions/{session_id}/artifacts/{item['attachment_id']}?mode=stream"
        for target in (url, f"{s.url}/api/sessions/{session_id}/download"):
            with httpx.stream("GET", target, timeout=30) as response:
                assert response.status_code == 200
                next(response.iter_raw(65536))
        deadline = time.monotonic() + 10
        while open_warehouse_files(s.process.pid, warehouse) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert open_warehouse_files(s.process.pid, warehouse) == []
        # A client leaving is no error of the server's.
        assert "Traceback" not in s.log()
        # And the server still serves.
        assert httpx.get(url.replace("mode=stream", "mode=meta")).status_code == 200
