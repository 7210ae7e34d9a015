"""
Uploads into one session from several server processes at once, on
PostgreSQL, as in production: the manifest lock (flock) and the session's
row lock serialise their batches across processes, and afterwards the
manifest, the rows, the events and the files agree entry by entry.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

import httpx
import pytest

from artifacts.models import ArtifactEvent
from attachments.models import Attachment, Session

pytestmark = [pytest.mark.server, pytest.mark.services, pytest.mark.django_db(transaction=True)]
PER_WORKER = 16


def test_concurrent_uploads_through_three_processes_lose_nothing(server, warehouse):
    async def upload_all(base_url: str, session_id: str, prefix: str) -> dict[str, str]:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:

            async def one(i: int) -> tuple[str, str]:
                content = f"{prefix}-{i}-".encode() + os.urandom(2048)
                reply = await client.post(
                    f"/api/uploads/{session_id}", files={"file": (f"{prefix}-{i}.bin", content)}
                )
                assert reply.status_code == 201, reply.text
                return reply.json()["attachment_id"], hashlib.sha256(content).hexdigest()

            return dict(await asyncio.gather(*(one(i) for i in range(PER_WORKER))))

    with server() as a, server() as b, server() as c:
        session_id = httpx.post(f"{a.url}/api/sessions", json={}).json()["session_id"]

        async def everyone() -> list[dict[str, str]]:
            return await asyncio.gather(
                *(upload_all(s.url, session_id, f"w{n}") for n, s in enumerate((a, b, c)))
            )

        uploaded = {k: v for part in asyncio.run(everyone()) for k, v in part.items()}

    assert len(uploaded) == 3 * PER_WORKER
    session = Session.objects.get(session_id=session_id)
    manifest = json.loads(
        (session.directory / "code_workspace/attachments/attachments_manifest.json").read_text()
    )
    entries = {e["attachment_id"]: e for e in manifest["attachments"]}
    rows = {r.attachment_id: r for r in Attachment.objects.filter(session=session)}
    events = list(
        ArtifactEvent.objects.filter(session=session)
        .order_by("sequence")
        .values_list("sequence", "attachment_id")
    )
    assert set(entries) == set(rows) == set(uploaded)
    assert sorted(a for _s, a in events) == sorted(uploaded)
    assert [s for s, _a in events] == list(range(1, len(uploaded) + 1))
    for attachment_id, digest in uploaded.items():
        assert entries[attachment_id]["sha256"] == rows[attachment_id].sha256 == digest
        data = (session.directory / entries[attachment_id]["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest
    session.refresh_from_db()
    assert (session.used_files, session.used_bytes) == (
        len(uploaded),
        sum(r.size for r in rows.values()),
    )
    staging = session.directory / "code_workspace/attachments/.staging"
    assert not staging.exists() or list(staging.iterdir()) == []
