"""Per-session quotas: checked while streaming, re-checked when recording, announced up front."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from attachments.quotas import QuotaExceeded
from attachments.receiving import UploadSink
from attachments.uploads import accept_upload

from .builders import (
    DjangoPath,
    StreamingPath,
    manifest_ids,
    multipart,
    new_session,
    uploaded_files,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=[DjangoPath, StreamingPath], ids=lambda cls: cls.name)
def client(request):
    return request.param()


def upload(client, session, content: bytes, name: str = "f.bin"):
    body, content_type = multipart([("file", name, content)])
    return client.post(f"/api/uploads/{session.session_id}", body, content_type)


def test_bytes_quota_refuses_the_upload_that_would_cross_it(client, settings):
    settings.ATTACHMENTS_SESSION_MAX_BYTES = 1000
    session = new_session()
    assert upload(client, session, b"x" * 600).status == 201
    reply = upload(client, session, b"y" * 401, "second.bin")
    assert reply.status == 413
    assert reply.body["code"] == "quota_exceeded"
    assert reply.body["quota_bytes"] == 1000
    assert reply.body["used_bytes"] == 600
    assert reply.body["remaining_bytes"] == 400
    assert [p.name for p in uploaded_files(session)] == ["f.bin"]
    assert len(manifest_ids(session)) == 1


def test_bytes_quota_allows_filling_it_exactly(client, settings):
    settings.ATTACHMENTS_SESSION_MAX_BYTES = 1000
    session = new_session()
    assert upload(client, session, b"x" * 600).status == 201
    assert upload(client, session, b"y" * 400).status == 201


def test_files_quota(client, settings):
    settings.ATTACHMENTS_SESSION_MAX_FILES = 2
    session = new_session()
    assert upload(client, session, b"1").status == 201
    assert upload(client, session, b"2").status == 201
    reply = upload(client, session, b"3")
    assert reply.status == 413
    assert reply.body["code"] == "quota_exceeded"
    assert (reply.body["quota_files"], reply.body["remaining_files"]) == (2, 0)
    assert len(uploaded_files(session)) == 2


def test_the_smaller_of_upload_limit_and_quota_applies(client, settings):
    settings.ATTACHMENTS_MAX_UPLOAD_BYTES = 100
    settings.ATTACHMENTS_SESSION_MAX_BYTES = 10_000
    reply = upload(client, new_session(), b"x" * 101)
    assert (reply.status, reply.body["code"]) == (413, "upload_too_large")


def received(session, content: bytes):
    sink = UploadSink(session.directory / "code_workspace/attachments", "late.bin")
    sink.write(content)
    return sink.finish()


def test_recording_rechecks_the_quota_for_uploads_that_ran_side_by_side(settings):
    settings.ATTACHMENTS_SESSION_MAX_BYTES = 1000
    session = new_session()
    # Both streamed while the session was empty; the first is recorded first.
    too_late, fits = received(session, b"y" * 400), received(session, b"z" * 300)
    assert upload(DjangoPath(), session, b"x" * 700).status == 201
    with pytest.raises(QuotaExceeded):
        accept_upload(session, too_late)
    assert not too_late.path.exists()
    accept_upload(session, fits)
    assert len(manifest_ids(session)) == 2
    assert sorted(p.name for p in uploaded_files(session)) == ["f.bin", "late.bin"]


def test_limits_are_announced_before_sending(settings):
    settings.ATTACHMENTS_MAX_UPLOAD_BYTES = 5000
    settings.ATTACHMENTS_SESSION_MAX_BYTES = 1000
    settings.ATTACHMENTS_SESSION_MAX_FILES = 3
    session = new_session()
    upload(DjangoPath(), session, b"x" * 250)
    api = APIClient()
    general = api.get("/api/limits").json()
    assert general == {
        "max_upload_bytes": 5000,
        "upload_field": "file",
        "files_per_request": 1,
        "quota_bytes": 1000,
        "quota_files": 3,
    }
    scoped = api.get(f"/api/limits?session_id={session.session_id}").json()
    assert (scoped["remaining_bytes"], scoped["remaining_files"]) == (750, 2)
    detail = api.get(f"/api/sessions/{session.session_id}").json()
    assert detail["limits"]["remaining_bytes"] == 750
    assert detail["limits"]["max_upload_bytes"] == 5000


def test_limits_for_an_unknown_session_are_a_404():
    assert APIClient().get("/api/limits?session_id=nope").status_code == 404
