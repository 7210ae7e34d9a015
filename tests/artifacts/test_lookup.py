"""`art_` ids of the event feed name artifacts for GET /api/sessions/{id}/artifacts/{id}."""

from __future__ import annotations

import hashlib

import pytest
from django.test import Client

from artifacts.models import ArtifactEvent
from attachments.exceptions import ArtifactNotFound
from attachments.lookup import resolve_artifact
from tests.attachments.builders import attach, new_session

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
