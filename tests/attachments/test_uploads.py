"""
The upload contract (DESIGN.md 4, "Upload and list"), checked on both ways a
body can arrive: parsed by Django, and streamed by the ASGI middleware.
"""

from __future__ import annotations

import pytest

from attachments.models import Attachment
from attachments.sessions import purge_session

from .builders import (
    DjangoPath,
    PNG_1x1,
    StreamingPath,
    manifest_ids,
    multipart,
    new_session,
    row_ids,
    sha256,
    uploaded_files,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=[DjangoPath, StreamingPath], ids=lambda cls: cls.name)
def client(request):
    return request.param()


@pytest.fixture
def session():
    return new_session()


def upload(client, session_id: str, content: bytes, filename: str = "spec.md"):
    body, content_type = multipart([("file", filename, content)])
    return client.post(f"/api/uploads/{session_id}", body, content_type)


def assert_nothing_kept(session):
    assert uploaded_files(session) == []
    assert manifest_ids(session) == []
    assert row_ids(session) == []


class TestUpload:
    def test_returns_the_attachment(self, client, session):
        content = b"# Spec\n\nThe contract.\n" * 10
        reply = upload(client, session.session_id, content, "spec.md")
        assert reply.status == 201
        body = reply.body
        assert body["attachment_id"].startswith("att_") and len(body["attachment_id"]) >= 16
        assert body["name"] == "spec.md"
        assert body["mime"] == body["mime_type"] == "text/markdown"
        assert body["kind"] == "file"
        assert body["size"] == len(content)
        assert body["sha256"] == sha256(content)
        assert body["source"] == "user_upload"
        assert body["session_id"] == session.session_id
        assert "created_at" in body

    def test_file_lands_in_its_attachment_directory(self, client, session):
        content = b"a,b\n1,2\n"
        body = upload(client, session.session_id, content, "data.csv").body
        path = session.directory / body["path"]
        assert body["path"] == f"code_workspace/attachments/{body['attachment_id']}/data.csv"
        assert path.read_bytes() == content

    def test_recorded_in_manifest_and_database(self, client, session):
        body = upload(client, session.session_id, b"hello").body
        assert manifest_ids(session) == [body["attachment_id"]]
        row = Attachment.objects.get(attachment_id=body["attachment_id"])
        assert (row.session_id, row.sha256, row.size) == (session.pk, sha256(b"hello"), 5)

    def test_listed_after_upload(self, client, session):
        first = upload(client, session.session_id, b"one", "one.txt").body
        second = upload(client, session.session_id, PNG_1x1, "dot.png").body
        listing = client.get(f"/api/uploads/{session.session_id}")
        assert listing.status == 200
        items = listing.body["attachments"]
        assert [a["attachment_id"] for a in items] == [
            first["attachment_id"],
            second["attachment_id"],
        ]
        assert {a["source"] for a in items} == {"user_upload"}
        assert items[1]["kind"] == "image" and items[1]["mime"] == "image/png"

    def test_mime_comes_from_content_not_the_client(self, client, session):
        body = upload(client, session.session_id, PNG_1x1, "innocent.txt").body
        assert body["mime"] == "image/png"

    def test_empty_files_are_accepted(self, client, session):
        reply = upload(client, session.session_id, b"", "empty.txt")
        assert reply.status == 201
        assert reply.body["size"] == 0
        assert reply.body["sha256"] == sha256(b"")

    def test_binary_content_is_kept_byte_for_byte(self, client, session):
        content = bytes(range(256)) * 4096 + b"\r\n--not-a-boundary\r\n" * 3
        body = upload(client, session.session_id, content, "blob.bin").body
        assert (session.directory / body["path"]).read_bytes() == content
        assert body["sha256"] == sha256(content)


class TestHostileNames:
    @pytest.mark.parametrize(
        ("given", "shown", "on_disk"),
        [
            ("../../etc/passwd", "passwd", "passwd"),
            ("..\\..\\boot.ini", "boot.ini", "boot.ini"),
            ("tab\tbell\x07.txt", "tabbell.txt", "tabbell.txt"),
            ("a:b|c?.txt", "a:b|c?.txt", "a_b_c_.txt"),
            ("quote'and%22.txt", "quote'and\".txt", "quote'and_.txt"),  # %22 is a quote
            ("&quot;entity&quot;.txt", '"entity".txt', "_entity_.txt"),
            ("履歴書 résumé.pdf", "履歴書 résumé.pdf", "履歴書 résumé.pdf"),
            (" .hidden. ", " .hidden. ", "hidden"),
        ],
    )
    def test_disk_name_is_sanitised_and_display_name_kept(
        self, client, session, given, shown, on_disk
    ):
        body, content_type = multipart([("file", "PLACEHOLDER", b"x")])
        body = body.replace(b"PLACEHOLDER", given.encode("utf-8"))
        reply = client.post(f"/api/uploads/{session.session_id}", body, content_type)
        assert reply.status == 201, reply.body
        assert reply.body["name"] == shown
        stored = session.directory / reply.body["path"]
        assert stored.name == on_disk
        assert stored.parent.parent == session.directory / "code_workspace/attachments"
        assert stored.read_bytes() == b"x"

    @pytest.mark.parametrize("given", ["..", ".", "../..", ""])
    def test_a_name_that_leaves_nothing_is_no_file(self, client, session, given):
        body, content_type = multipart([("file", given, b"x")])
        reply = client.post(f"/api/uploads/{session.session_id}", body, content_type)
        assert reply.status == 400
        assert reply.body["code"] == "missing_file"
        assert_nothing_kept(session)

    def test_long_names_are_bounded_on_disk(self, client, session):
        reply = upload(client, session.session_id, b"x", "n" * 300 + ".txt")
        assert reply.status == 201
        assert reply.body["name"] == "n" * 300 + ".txt"
        stored = session.directory / reply.body["path"]
        assert stored.name.endswith(".txt") and len(stored.name.encode()) <= 200


class TestBadInput:
    def test_missing_file_field(self, client, session):
        body, content_type = multipart([("other", None, b"value")])
        reply = client.post(f"/api/uploads/{session.session_id}", body, content_type)
        assert reply.status == 400
        assert reply.body["code"] == "missing_file"
        assert "file" in reply.body["errors"]
        assert_nothing_kept(session)

    def test_file_in_another_field_is_not_kept(self, client, session):
        body, content_type = multipart([("document", "a.txt", b"content")])
        reply = client.post(f"/api/uploads/{session.session_id}", body, content_type)
        assert reply.status == 400
        assert_nothing_kept(session)

    def test_not_multipart(self, client, session):
        reply = client.post(f"/api/uploads/{session.session_id}", b'{"a": 1}', "application/json")
        assert reply.status == 415
        assert reply.body["code"] == "unsupported_media_type"
        assert_nothing_kept(session)

    def test_two_files_at_once(self, client, session):
        body, content_type = multipart([("file", "a.txt", b"a"), ("file", "b.txt", b"b")])
        reply = client.post(f"/api/uploads/{session.session_id}", body, content_type)
        assert reply.status == 400
        assert reply.body["code"] == "multiple_files"
        assert_nothing_kept(session)

    def test_truncated_body(self, client, session):
        body, content_type = multipart([("file", "a.txt", b"x" * 50_000)])
        reply = client.post(f"/api/uploads/{session.session_id}", body[:30_000], content_type)
        assert reply.status == 400
        assert reply.body["code"] in {"invalid_multipart", "missing_file"}
        assert_nothing_kept(session)

    @pytest.mark.parametrize("length", [257, 4096])
    def test_a_boundary_far_longer_than_any_client_sends(self, client, session, length):
        body, content_type = multipart([("file", "a.txt", b"x")], boundary="b" * length)
        reply = client.post(f"/api/uploads/{session.session_id}", body, content_type)
        assert (reply.status, reply.body["code"]) == (400, "invalid_multipart")
        assert "boundary" in reply.body["detail"]
        assert_nothing_kept(session)

    def test_over_the_limit(self, client, session, settings):
        settings.ATTACHMENTS_MAX_UPLOAD_BYTES = 1000
        reply = upload(client, session.session_id, b"x" * 1001)
        assert reply.status == 413
        assert reply.body["code"] == "upload_too_large"
        assert reply.body["limit_bytes"] == 1000
        assert_nothing_kept(session)

    def test_exactly_at_the_limit(self, client, session, settings):
        settings.ATTACHMENTS_MAX_UPLOAD_BYTES = 1000
        assert upload(client, session.session_id, b"x" * 1000).status == 201

    def test_declared_length_far_over_the_limit_is_refused_before_reading(
        self, client, session, settings
    ):
        settings.ATTACHMENTS_MAX_UPLOAD_BYTES = 10
        reply = upload(client, session.session_id, b"x" * (2 << 20))
        assert reply.status == 413
        assert_nothing_kept(session)

    @pytest.mark.parametrize("session_id", ["bad.id", "x" * 65, "a%20b"])
    def test_invalid_session_id(self, client, session_id):
        body, content_type = multipart([("file", "a.txt", b"a")])
        reply = client.post(f"/api/uploads/{session_id}", body, content_type)
        assert reply.status == 400
        assert reply.body["code"] == "invalid_session_id"

    def test_unknown_session(self, client, warehouse):
        body, content_type = multipart([("file", "a.txt", b"a")])
        reply = client.post("/api/uploads/nosuchsession", body, content_type)
        assert reply.status == 404
        assert reply.body["code"] == "session_not_found"
        assert not warehouse.exists() or not any(warehouse.iterdir())

    def test_purged_session(self, client, session):
        purge_session(session)
        reply = upload(client, session.session_id, b"a")
        assert reply.status == 404
        assert not session.directory.exists()
        assert client.get(f"/api/uploads/{session.session_id}").status == 404
