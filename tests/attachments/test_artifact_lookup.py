from __future__ import annotations

import pytest

from attachments import artifact_lookup as lookup
from attachments.artifact_lookup import ResolvedArtifact, register_resolver, resolve_artifact
from attachments.exceptions import ArtifactFileMissing, ArtifactNotFound

from .builders import attach, new_session

pytestmark = pytest.mark.django_db


@pytest.fixture
def session():
    return new_session()


class TestAttachments:
    def test_resolves_an_attachment_of_the_session(self, session):
        attachment = attach(session, "notes.txt", b"some notes")
        resolved = resolve_artifact(session, attachment.attachment_id)
        assert resolved.attachment_id == resolved.artifact_id == attachment.attachment_id
        assert (resolved.name, resolved.size, resolved.sha256) == (
            "notes.txt",
            10,
            attachment.sha256,
        )
        assert resolved.path == attachment.path
        assert resolved.details["source"] == "user_upload"
        with resolved.open() as file:
            assert file.read() == b"some notes"

    def test_another_sessions_attachment_is_not_found(self, session):
        other = attach(new_session(), "theirs.txt", b"private")
        with pytest.raises(ArtifactNotFound):
            resolve_artifact(session, other.attachment_id)

    def test_purged_attachment_is_not_found(self, session):
        attachment = attach(session, "gone.txt", b"x")
        attachment.purged_at = attachment.created_at
        attachment.save()
        with pytest.raises(ArtifactNotFound):
            resolve_artifact(session, attachment.attachment_id)

    @pytest.mark.parametrize(
        "artifact_id",
        ["att_doesnotexist00", "att_short", "nope", "", "att_../../etc/pw", "x" * 500],
    )
    def test_unknown_or_malformed_ids_are_not_found(self, session, artifact_id):
        with pytest.raises(ArtifactNotFound):
            resolve_artifact(session, artifact_id)

    def test_a_missing_file_is_reported_as_such(self, session):
        attachment = attach(session, "x.txt", b"x")
        (session.directory / attachment.path).unlink()
        resolved = resolve_artifact(session, attachment.attachment_id)
        with pytest.raises(ArtifactFileMissing) as caught:
            resolved.open()
        assert "no longer" in str(caught.value.detail)

    def test_a_record_pointing_outside_the_session_is_not_opened(self, session):
        attachment = attach(session, "x.txt", b"x")
        attachment.path = "../../outside.txt"
        attachment.save()
        with pytest.raises(ArtifactFileMissing):
            resolve_artifact(session, attachment.attachment_id).open()


class TestArtifactIds:
    def test_art_ids_are_not_found_until_the_event_feed_registers(self, session, monkeypatch):
        monkeypatch.setattr(lookup, "_resolvers", {"att_": lookup._resolvers["att_"]})
        with pytest.raises(ArtifactNotFound):
            resolve_artifact(session, "art_AAAAAAAAAAAAAAAA")

    def test_a_registered_resolver_answers_its_prefix(self, session, monkeypatch):
        monkeypatch.setattr(lookup, "_resolvers", dict(lookup._resolvers))
        attachment = attach(session, "out.csv", b"a,b\n")

        def resolve_event(session_, artifact_id):
            if artifact_id != "art_AAAAAAAAAAAAAAAA":
                return None
            return ResolvedArtifact(
                artifact_id=artifact_id,
                session=session_,
                path=attachment.path,
                name="out.csv",
                mime="text/csv",
                size=4,
                sha256=attachment.sha256,
                details={"change_type": "created", "sequence": 7},
            )

        register_resolver("art_", resolve_event)
        resolved = resolve_artifact(session, "art_AAAAAAAAAAAAAAAA")
        assert resolved.metadata()["sequence"] == 7
        with pytest.raises(ArtifactNotFound):
            resolve_artifact(session, "art_BBBBBBBBBBBBBBBB")
