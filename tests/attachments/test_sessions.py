from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from attachments.models import Attachment, Session

from .builders import multipart, record_directory_syncs

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return APIClient()


def create(api, **body):
    return api.post("/api/sessions", body, format="json")


class TestCreate:
    def test_creates_a_session_with_a_fresh_id(self, api, warehouse):
        response = create(api)
        assert response.status_code == 201
        body = response.json()
        assert body["status"] == "created"
        assert body["created_at"]
        assert len(body["session_id"]) >= 16
        assert (
            warehouse / f"session_{body['session_id']}" / "code_workspace" / "attachments"
        ).is_dir()

    def test_the_new_directories_are_named_durably(self, api, warehouse, monkeypatch):
        warehouse.mkdir(parents=True, exist_ok=True)
        synced = record_directory_syncs(monkeypatch)
        session = warehouse / f"session_{create(api).json()['session_id']}"
        # Each new directory's name is in its parent: a crash cannot lose one.
        assert synced == [session / "code_workspace", session, warehouse]

    def test_empty_body_is_fine(self, api):
        response = api.post("/api/sessions")
        assert response.status_code == 201

    def test_accepts_a_proposed_id(self, api):
        response = create(api, session_id="run-42_a")
        assert response.status_code == 201
        assert response.json()["session_id"] == "run-42_a"

    def test_refuses_a_taken_id(self, api):
        create(api, session_id="taken")
        response = create(api, session_id="taken")
        assert response.status_code == 409
        assert response.json()["code"] == "session_exists"

    def test_refuses_a_purged_id(self, api):
        create(api, session_id="gone")
        api.delete("/api/sessions/gone")
        assert create(api, session_id="gone").status_code == 409

    @pytest.mark.parametrize("session_id", ["../x", "a b", "x" * 65, "é"])
    def test_refuses_malformed_ids(self, api, session_id):
        response = create(api, session_id=session_id)
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_session_id"

    def test_invalid_json(self, api):
        response = api.generic("POST", "/api/sessions", b"{nope", content_type="application/json")
        assert response.status_code == 400
        assert response.json()["code"] == "parse_error"

    def test_wrong_field_type(self, api):
        response = create(api, session_id=["a"])
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_session_id"

    def test_body_must_be_an_object(self, api):
        response = api.generic("POST", "/api/sessions", b"[1]", content_type="application/json")
        assert response.status_code == 400


class TestDetail:
    def test_shows_status_and_counts(self, api):
        create(api, session_id="s1")
        body, content_type = multipart([("file", "a.txt", b"abc")])
        api.generic("POST", "/api/uploads/s1", body, content_type=content_type)
        response = api.get("/api/sessions/s1")
        assert response.status_code == 200
        data = response.json()
        assert data["session_id"] == "s1"
        assert data["status"] == "created"
        assert data["counts"] == {"attachments": 1, "attachment_bytes": 3}

    def test_unknown(self, api):
        response = api.get("/api/sessions/nope")
        assert response.status_code == 404
        assert response.json() == {"detail": "No such session.", "code": "session_not_found"}

    def test_malformed(self, api):
        assert api.get("/api/sessions/bad.id").json()["code"] == "invalid_session_id"

    def test_unknown_endpoint_is_a_json_404(self, api):
        response = api.get("/api/nothing/here")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


class TestDelete:
    def test_purges_directory_and_records(self, api, warehouse):
        create(api, session_id="s1")
        body, content_type = multipart([("file", "a.txt", b"abc")])
        api.generic("POST", "/api/uploads/s1", body, content_type=content_type)
        response = api.delete("/api/sessions/s1")
        assert response.status_code == 204
        assert not (warehouse / "session_s1").exists()
        assert Attachment.objects.count() == 0
        assert api.get("/api/sessions/s1").status_code == 404
        assert api.delete("/api/sessions/s1").status_code == 404
        assert api.get("/api/uploads/s1").status_code == 404
        assert Session.objects.get(session_id="s1").purged_at is not None


class TestLimits:
    def test_no_limit_by_default(self, api, settings):
        settings.ATTACHMENTS_MAX_UPLOAD_BYTES = None
        assert api.get("/api/limits").json() == {
            "max_upload_bytes": None,
            "max_request_bytes": None,
            "resumable_max_upload_bytes": None,
            "upload_field": "file",
            "files_per_request": 1,
            "quota_bytes": None,
            "quota_files": None,
        }

    def test_reports_the_configured_limit(self, api, settings):
        settings.ATTACHMENTS_MAX_UPLOAD_BYTES = 1234
        assert api.get("/api/limits").json()["max_upload_bytes"] == 1234
