"""
`art_` ids of the event feed name artifacts for GET /api/sessions/{id}/artifacts/{id},
and the session zip's `after=` selects what changed since a cursor.
"""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
from django.test import Client
from rest_framework.test import APIClient

from artifacts.models import ArtifactEvent
from attachments.artifact_lookup import resolve_artifact
from attachments.exceptions import ArtifactNotFound
from attachments.models import Attachment
from tests.attachments.builders import DjangoPath, attach, multipart, new_session

pytestmark = pytest.mark.django_db


def event_of(attachment, change_type: str = "created") -> ArtifactEvent:
    return ArtifactEvent.objects.get(
        session=attachment.session, attachment_id=attachment.attachment_id, change_type=change_type
    )


def test_an_event_id_resolves_to_the_attachment_it_announced():
    session = new_session()
    attachment = attach(session, "notes.txt", b"some notes")
    event = event_of(attachment)
    resolved = resolve_artifact(session, event.artifact_id)
    assert (resolved.artifact_id, resolved.attachment_id) == (
        event.artifact_id,
        attachment.attachment_id,
    )
    assert (resolved.path, resolved.size, resolved.sha256) == (
        attachment.path,
        10,
        attachment.sha256,
    )
    meta = resolved.metadata()
    assert (meta["change_type"], meta["sequence"], meta["source"]) == ("created", 1, "user_upload")
    with resolved.open() as file:
        assert file.read() == b"some notes"


def test_an_event_id_streams_the_bytes_over_http():
    session = new_session()
    attachment = attach(session, "notes.txt", b"some notes")
    event = event_of(attachment)
    response = Client().get(
        f"/api/sessions/{session.session_id}/artifacts/{event.artifact_id}?mode=stream"
    )
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body == b"some notes"
    assert f"sha256:{hashlib.sha256(body).hexdigest()}" == event.to_payload()["hash"]


def test_another_sessions_event_id_is_not_found():
    theirs = event_of(attach(new_session(), "theirs.txt", b"private"))
    with pytest.raises(ArtifactNotFound):
        resolve_artifact(new_session(), theirs.artifact_id)


def test_the_event_of_a_purged_attachment_is_not_found():
    session = new_session()
    attachment = attach(session, "gone.txt", b"x")
    attachment.purged_at = attachment.created_at
    attachment.save()
    for change_type in ("created", "deleted"):
        with pytest.raises(ArtifactNotFound):
            resolve_artifact(session, event_of(attachment, change_type).artifact_id)


def test_an_unknown_event_id_is_not_found():
    with pytest.raises(ArtifactNotFound):
        resolve_artifact(new_session(), "art_AAAAAAAAAAAAAAAA")


def test_the_event_of_a_deleted_attachment_is_not_found():
    session = new_session()
    attachment = attach(session, "gone.txt", b"x")
    Attachment.objects.get(pk=attachment.pk).delete()
    deleted = ArtifactEvent.objects.get(
        attachment_id=attachment.attachment_id, change_type="deleted"
    )
    response = Client().get(f"/api/sessions/{session.session_id}/artifacts/{deleted.artifact_id}")
    assert (response.status_code, response.json()["code"]) == (404, "artifact_not_found")


def upload(session, name: str, content: bytes) -> dict:
    body, content_type = multipart([("file", name, content)])
    reply = DjangoPath().post(f"/api/uploads/{session.session_id}", body, content_type)
    assert reply.status == 201
    return reply.body


def zip_names(response) -> list[str]:
    assert response.status_code == 200, response.content[:300]
    data = b"".join(response.streaming_content)
    return sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())


class TestZipAfterCursor:
    def test_only_what_changed_after_the_cursor(self):
        session = new_session()
        upload(session, "before.txt", b"1")
        cursor = APIClient().get(f"/api/sessions/{session.session_id}").json()["last_event_cursor"]
        later = upload(session, "after.txt", b"2")
        names = zip_names(
            APIClient().get(f"/api/sessions/{session.session_id}/download?after={cursor}")
        )
        assert names == [later["path"]]

    def test_files_deleted_since_are_left_out(self):
        session = new_session()
        kept = upload(session, "kept.txt", b"1")
        dropped = upload(session, "dropped.txt", b"2")
        Attachment.objects.get(attachment_id=dropped["attachment_id"]).delete()
        names = zip_names(APIClient().get(f"/api/sessions/{session.session_id}/download?after=0"))
        assert names == [kept["path"]]

    def test_a_cursor_ahead_of_the_log_is_a_410_with_where_to_resume(self):
        session = new_session()
        upload(session, "a.txt", b"1")
        response = APIClient().get(f"/api/sessions/{session.session_id}/download?after=99")
        assert response.status_code == 410
        body = response.json()
        assert body["code"] == "cursor_ahead"
        assert body["resume_after"] == 1
