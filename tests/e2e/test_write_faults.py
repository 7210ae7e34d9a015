"""
The write path under real faults: a worker killed with SIGKILL in the middle
of concurrent uploads, and a full disk. What a client was told was stored is
stored; nothing else is left once the next worker has reconciled.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from attachments.models import Attachment
from tests.faults import grow, small_filesystem
from tests.servers import run_server

from .event_clients import create_session_with_auth

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]


def session_state(warehouse: Path, session_id: str) -> tuple[dict, list[str], list[str]]:
    """(manifest entries by id, attachment directories on disk, staging leftovers)."""
    attachments = warehouse / f"session_{session_id}" / "code_workspace" / "attachments"
    manifest_path = attachments / "attachments_manifest.json"
    entries = {}
    if manifest_path.exists():
        entries = {
            e["attachment_id"]: e for e in json.loads(manifest_path.read_text())["attachments"]
        }
    directories = sorted(p.name for p in attachments.glob("att_*"))
    staging = attachments / ".staging"
    leftovers = sorted(p.name for p in staging.iterdir()) if staging.exists() else []
    return entries, directories, leftovers


def test_a_worker_killed_mid_upload_loses_no_acknowledged_file_and_leaves_nothing(
    warehouse, tmp_path
):
    acknowledged: dict[str, str] = {}  # attachment id -> sha256 the client sent
    stop = threading.Event()
    lock = threading.Lock()
    logs = tmp_path / "logs"
    with run_server("uvicorn", warehouse, logs, MAC_RECONCILE_AT_START="0") as first:
        session_id, auth = create_session_with_auth(first.url)

        def client(index: int) -> None:
            n = 0
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    content = os.urandom(512 * 1024) + f"{index}-{n}".encode()
                    n += 1
                    try:
                        reply = http.post(
                            f"{first.url}/api/uploads/{session_id}",
                            files={"file": (f"c{index}-{n}.bin", content)},
                            headers=auth,
                        )
                    except httpx.TransportError:
                        return
                    if reply.status_code == 201:
                        with lock:
                            acknowledged[reply.json()["attachment_id"]] = hashlib.sha256(
                                content
                            ).hexdigest()

        clients = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        stop.set()
        for thread in clients:
            thread.join(30)
    assert len(acknowledged) >= 40

    with run_server("uvicorn", warehouse, logs, MAC_RECONCILE_AT_START="1") as second:
        deadline = time.monotonic() + 60
        while "Reconciliation at start finished" not in second.log():
            assert time.monotonic() < deadline, second.log()
            time.sleep(0.1)
        listed = httpx.get(f"{second.url}/api/uploads/{session_id}", headers=auth, timeout=10)
        assert listed.status_code == 200
        listed_ids = {a["attachment_id"]: a["sha256"] for a in listed.json()["attachments"]}

    entries, directories, leftovers = session_state(warehouse, session_id)
    assert leftovers == []
    # Every acknowledged upload is listed, in the manifest and on disk, with its bytes.
    for attachment_id, digest in acknowledged.items():
        assert listed_ids.get(attachment_id) == digest
        assert entries[attachment_id]["sha256"] == digest
        data = (warehouse / f"session_{session_id}" / entries[attachment_id]["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest
    # Nothing half-recorded: manifest, rows and files agree entry by entry.
    rows = set(
        Attachment.objects.filter(session__session_id=session_id).values_list(
            "attachment_id", flat=True
        )
    )
    assert set(entries) == rows == set(directories) == set(listed_ids)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
def test_a_full_disk_is_a_json_507_and_leaves_nothing(tmp_path):
    with small_filesystem(tmp_path / "small", "4m") as warehouse:
        with run_server("uvicorn", warehouse, tmp_path / "logs") as s:
            session_id, auth = create_session_with_auth(s.url)
            big = httpx.post(
                f"{s.url}/api/uploads/{session_id}",
                files={"file": ("big.bin", os.urandom(6 * 1024 * 1024))},
                headers=auth,
                timeout=30,
            )
            assert big.status_code == 507
            assert big.headers["content-type"] == "application/json"
            assert big.json()["code"] == "insufficient_storage"
            entries, directories, leftovers = session_state(warehouse, session_id)
            assert (entries, directories, leftovers) == ({}, [], [])
            # The space the refused upload took is free again.
            small = httpx.post(
                f"{s.url}/api/uploads/{session_id}",
                files={"file": ("small.txt", b"fits")},
                headers=auth,
                timeout=30,
            )
            assert small.status_code == 201
            assert list(session_state(warehouse, session_id)[0]) == [small.json()["attachment_id"]]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
def test_a_tus_patch_that_fills_the_disk_is_a_json_507_and_the_upload_resumes_once_there_is_room(
    tmp_path,
):
    data = os.urandom(6 * 1024 * 1024)
    tus = {"Tus-Resumable": "1.0.0"}
    with small_filesystem(tmp_path / "small", "4m") as warehouse:
        with run_server("uvicorn", warehouse, tmp_path / "logs") as s:
            session_id, auth = create_session_with_auth(s.url)
            with httpx.Client(headers={**auth, **tus}, timeout=30) as http:
                created = http.post(
                    f"{s.url}/api/uploads/{session_id}/tus/",
                    headers={
                        "Upload-Length": str(len(data)),
                        "Upload-Metadata": "filename YS5iaW4=",
                    },
                )
                assert created.status_code == 201
                location = created.headers["location"]

                def patch(offset: int) -> httpx.Response:
                    return http.patch(
                        location,
                        content=data[offset:],
                        headers={
                            "Content-Type": "application/offset+octet-stream",
                            "Upload-Offset": str(offset),
                        },
                    )

                full = patch(0)
                assert full.status_code == 507
                assert full.headers["content-type"] == "application/json"
                assert full.json()["code"] == "insufficient_storage"
                # What was written before the disk filled is kept, and said.
                kept = int(http.head(location).headers["upload-offset"])
                assert 0 < kept < len(data)
                assert Attachment.objects.count() == 0
                grow(warehouse, "16m")
                rest = patch(kept)
                assert (rest.status_code, rest.headers["upload-offset"]) == (204, str(len(data)))
                [entry] = session_state(warehouse, session_id)[0].values()
                assert entry["sha256"] == hashlib.sha256(data).hexdigest()
                assert entry["size"] == len(data)
