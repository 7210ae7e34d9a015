"""Downloads by `art_` id, and the session zip's `after=`, answered from the event log."""

from __future__ import annotations

import io
import zipfile

import pytest
from rest_framework.test import APIClient

from artifacts.models import ArtifactEvent
from attachments.models import Attachment
from tests.attachments.builders import DjangoPath, multipart, new_session

pytestmark = pytest.mark.django_db


def upload(session, name: str, content: bytes) -> dict:
    body, content_type = multipart([("file", name, content)])
    reply = DjangoPath().post(f"/api/uploads/{session.session_id}", body, content_type)
    assert reply.status == 201
    return reply.body


def event_for(attachment_id: str, change_type: str = "created") -> ArtifactEvent:
    return ArtifactEvent.objects.get(attachment_id=attachment_id, change_type=change_type)


def zip_names(response) -> list[str]:
    assert response.status_code == 200, response.content[:300]
    data = b"".join(response.streaming_content)
    return sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())


class TestArtIds:
    def test_an_event_id_streams_the_file_it_describes(self):
        session = new_session()
        uploaded = upload(session, "data.csv", b"a,b\n1,2\n")
        event = event_for(uploaded["attachment_id"])
        url = f"/api/sessions/{session.session_id}/artifacts/{event.artifact_id}"
        streamed = APIClient().get(url + "?mode=stream")
        assert streamed.status_code == 200
        assert b"".join(streamed.streaming_content) == b"a,b\n1,2\n"
        meta = APIClient().get(url).json()
        assert meta["artifact_id"] == event.artifact_id
        assert meta["attachment_id"] == uploaded["attachment_id"]
        assert (meta["sequence"], meta["change_type"]) == (event.sequence, "created")
        assert meta["sha256"] == uploaded["sha256"]

    def test_another_sessions_event_is_not_found(self):
        mine, theirs = new_session(), new_session()
        event = event_for(upload(theirs, "secret.txt", b"s")["attachment_id"])
        response = APIClient().get(f"/api/sessions/{mine.session_id}/artifacts/{event.artifact_id}")
        assert (response.status_code, response.json()["code"]) == (404, "artifact_not_found")

    def test_the_event_of_a_deletion_has_no_file_to_serve(self):
        session = new_session()
        uploaded = upload(session, "gone.txt", b"x")
        Attachment.objects.get(attachment_id=uploaded["attachment_id"]).delete()
        deleted = event_for(uploaded["attachment_id"], "deleted")
        response = APIClient().get(
            f"/api/sessions/{session.session_id}/artifacts/{deleted.artifact_id}"
        )
        assert response.status_code == 404


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
