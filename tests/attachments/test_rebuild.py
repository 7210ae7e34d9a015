"""`manage.py rebuild_attachments`: the manifests on disk are the source of truth."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from attachments.manifest_sync import manifest_for
from attachments.models import Attachment, Session

from .builders import DjangoPath, multipart, new_session

pytestmark = pytest.mark.django_db


def upload(session, name: str, content: bytes) -> dict:
    body, content_type = multipart([("file", name, content)])
    return DjangoPath().post(f"/api/uploads/{session.session_id}", body, content_type).body


def rebuild(*args: str) -> str:
    out = io.StringIO()
    call_command("rebuild_attachments", *args, stdout=out)
    return out.getvalue()


def snapshot(session) -> list[tuple]:
    return list(
        Attachment.objects.filter(session=session)
        .order_by("attachment_id")
        .values_list(
            "attachment_id",
            "name",
            "path",
            "mime",
            "kind",
            "size",
            "sha256",
            "source",
            "created_at",
        )
    )


def test_restores_lost_rows_exactly():
    session = new_session()
    upload(session, "a.md", b"# A")
    upload(session, "b.csv", b"x,y\n")
    before = snapshot(session)
    Attachment.objects.all().delete()
    assert "2 created" in rebuild()
    assert snapshot(session) == before


def test_is_idempotent():
    session = new_session()
    upload(session, "a.md", b"# A")
    rebuild()
    assert "0 created, 0 updated, 0 removed" in rebuild()


def test_removes_rows_whose_entry_and_file_are_gone():
    session = new_session()
    kept = upload(session, "a.md", b"# A")
    dropped = upload(session, "b.md", b"# B")
    with manifest_for(session).edit() as document:
        document.remove(dropped["attachment_id"])
    (session.directory / dropped["path"]).unlink()
    assert "1 removed" in rebuild(session.session_id)
    assert list(Attachment.objects.values_list("attachment_id", flat=True)) == [
        kept["attachment_id"]
    ]


def test_writes_back_the_entry_of_a_row_whose_file_is_there():
    # What a crash between an upload's commit and its manifest rename leaves.
    session = new_session()
    first = upload(session, "a.md", b"# A")
    second = upload(session, "b.md", b"# B")
    with manifest_for(session).edit() as document:
        document.remove(second["attachment_id"])
    before = snapshot(session)
    assert "0 removed" in rebuild(session.session_id)
    manifest = json.loads(manifest_for(session).path.read_text())
    entries = {entry["attachment_id"]: entry for entry in manifest["attachments"]}
    assert set(entries) == {first["attachment_id"], second["attachment_id"]}
    assert entries[second["attachment_id"]]["sha256"] == second["sha256"]
    assert snapshot(session) == before


def test_recreates_sessions_found_only_on_disk():
    session = new_session("ondisk")
    upload(session, "a.md", b"# A")
    Session.objects.all().delete()
    rebuild()
    restored = Session.objects.get(session_id="ondisk")
    assert restored.attachments.count() == 1


def test_skips_a_corrupt_manifest_and_rebuilds_the_rest():
    broken, good = new_session("broken"), new_session("good")
    upload(broken, "a.md", b"# A")
    upload(good, "b.md", b"# B")
    manifest_for(broken).path.write_text("{corrupt")
    Attachment.objects.all().delete()
    output = rebuild()
    assert "good: 1 created" in output
    assert "broken" not in output
    assert Attachment.objects.get().session.session_id == "good"


def test_unknown_session_argument_fails_clearly():
    with pytest.raises(CommandError, match="No such session"):
        rebuild("missing")


def test_manifest_and_rows_agree_after_uploads():
    session = new_session()
    for i in range(5):
        upload(session, f"f{i}.txt", str(i).encode())
    manifest = json.loads(manifest_for(session).path.read_text())
    assert sorted(a["attachment_id"] for a in manifest["attachments"]) == sorted(
        Attachment.objects.values_list("attachment_id", flat=True)
    )
