"""Upload scanners run before an upload is recorded (ATTACHMENTS_UPLOAD_SCANNERS)."""

from __future__ import annotations

import pytest

from .builders import (
    DjangoPath,
    StreamingPath,
    manifest_ids,
    multipart,
    new_session,
    row_ids,
    uploaded_files,
)
from .scanners import MARKER

pytestmark = pytest.mark.django_db(transaction=True)
SCANNERS = "tests.attachments.scanners"


@pytest.fixture(params=[DjangoPath, StreamingPath], ids=lambda cls: cls.name)
def client(request):
    return request.param()


def upload(client, session, content: bytes):
    body, content_type = multipart([("file", "f.txt", content)])
    return client.post(f"/api/uploads/{session.session_id}", body, content_type)


def assert_nothing_kept(session):
    assert uploaded_files(session) == [] and manifest_ids(session) == [] and row_ids(session) == []


def test_a_clean_file_is_recorded_with_its_verdict(client, settings):
    settings.ATTACHMENTS_UPLOAD_SCANNERS = [f"{SCANNERS}.reject_marker"]
    reply = upload(client, new_session(), b"harmless")
    assert reply.status == 201
    assert reply.body["metadata"]["scan"] == {
        "status": "clean",
        "results": [{"scanner": f"{SCANNERS}.reject_marker", "status": "clean", "reason": ""}],
    }


def test_a_rejected_file_is_a_422_with_the_reason_and_is_removed(client, settings):
    settings.ATTACHMENTS_UPLOAD_SCANNERS = [f"{SCANNERS}.reject_marker"]
    session = new_session()
    reply = upload(client, session, b"prefix " + MARKER + b" suffix")
    assert reply.status == 422
    assert reply.body["code"] == "upload_rejected"
    assert reply.body["reason"] == "Test.Marker found"
    assert reply.body["scanner"] == f"{SCANNERS}.reject_marker"
    assert_nothing_kept(session)


def test_too_large_for_the_scanner_is_refused_by_default(client, settings):
    settings.ATTACHMENTS_UPLOAD_SCANNERS = [f"{SCANNERS}.too_large_over_ten_bytes"]
    session = new_session()
    reply = upload(client, session, b"x" * 11)
    assert reply.status == 422
    assert reply.body["code"] == "unscannable"
    assert_nothing_kept(session)


def test_too_large_for_the_scanner_can_be_kept_marked_unscanned(client, settings):
    settings.ATTACHMENTS_UPLOAD_SCANNERS = [f"{SCANNERS}.too_large_over_ten_bytes"]
    settings.ATTACHMENTS_UNSCANNABLE = "keep"
    reply = upload(client, new_session(), b"x" * 11)
    assert reply.status == 201
    assert reply.body["metadata"]["scan"]["status"] == "unscanned"
    assert reply.body["metadata"]["scan"]["results"][0]["status"] == "too_large"


def test_an_unreachable_scanner_fails_closed(client, settings):
    settings.ATTACHMENTS_UPLOAD_SCANNERS = [f"{SCANNERS}.unreachable"]
    session = new_session()
    reply = upload(client, session, b"anything")
    assert reply.status == 503
    assert reply.body["code"] == "scanner_unavailable"
    assert_nothing_kept(session)


def test_without_scanners_nothing_is_recorded_about_scanning(client):
    reply = upload(client, new_session(), b"anything")
    assert reply.status == 201
    assert "scan" not in reply.body["metadata"]
