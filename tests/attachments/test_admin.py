from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from attachments.models import Session

from .builders import DjangoPath, multipart, new_session

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def uploaded():
    session = new_session("admin-demo")
    body, content_type = multipart([("file", "report.md", b"# Report\n")])
    return DjangoPath().post(f"/api/uploads/{session.session_id}", body, content_type).body


def test_attachment_list_shows_useful_columns(admin_client, uploaded):
    page = admin_client.get("/admin/attachments/attachment/").content.decode()
    assert "report.md" in page
    assert uploaded["attachment_id"] in page
    assert "text/markdown" in page
    assert "9\xa0bytes" in page


@pytest.mark.parametrize(
    "query", ["kind__exact=file", "source__exact=user_upload", "mime=text/markdown"]
)
def test_attachment_filters(admin_client, uploaded, query):
    page = admin_client.get(f"/admin/attachments/attachment/?{query}").content.decode()
    assert "report.md" in page


def test_filter_excludes_other_kinds(admin_client, uploaded):
    page = admin_client.get("/admin/attachments/attachment/?kind__exact=image").content.decode()
    assert "report.md" not in page


@pytest.mark.parametrize("term", ["report", "admin-demo"])
def test_attachment_search(admin_client, uploaded, term):
    page = admin_client.get(f"/admin/attachments/attachment/?q={term}").content.decode()
    assert "report.md" in page


def test_search_by_attachment_id(admin_client, uploaded):
    page = admin_client.get(
        f"/admin/attachments/attachment/?q={uploaded['attachment_id']}"
    ).content.decode()
    assert "report.md" in page


def test_session_list_and_detail(admin_client, uploaded):
    listing = admin_client.get("/admin/attachments/session/?q=admin-demo").content.decode()
    assert "admin-demo" in listing
    session_pk = Session.objects.get(session_id="admin-demo").pk
    detail = admin_client.get(f"/admin/attachments/session/{session_pk}/change/")
    assert detail.status_code == 200
    assert "report.md" in detail.content.decode()


def upload_png(session_id: str) -> dict:
    from .builders import PNG_1x1

    body, content_type = multipart([("file", "dot.png", PNG_1x1)])
    return DjangoPath().post(f"/api/uploads/{session_id}", body, content_type).body


def test_images_get_a_thumbnail_and_every_file_a_download_link(admin_client, uploaded):
    image = upload_png("admin-demo")
    page = admin_client.get("/admin/attachments/attachment/").content.decode()
    stream = f"/api/sessions/admin-demo/artifacts/{image['attachment_id']}?mode=stream"
    assert f'<img src="{stream}"' in page
    assert (
        f'href="/api/sessions/admin-demo/artifacts/{uploaded["attachment_id"]}?mode=stream&amp;download=true"'
        in page
    )


def test_the_thumbnail_url_serves_the_image(admin_client):
    new_session("thumbs")
    image = upload_png("thumbs")
    response = admin_client.get(
        f"/api/sessions/thumbs/artifacts/{image['attachment_id']}?mode=stream"
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"


def test_filter_by_session(admin_client, uploaded):
    new_session("other")
    body, content_type = multipart([("file", "elsewhere.md", b"# Other\n")])
    DjangoPath().post("/api/uploads/other", body, content_type)
    page = admin_client.get(
        "/admin/attachments/attachment/?session__session_id__exact=admin-demo"
    ).content.decode()
    assert "report.md" in page and "elsewhere.md" not in page


def test_purge_action(admin_client, uploaded):
    session = Session.objects.get(session_id="admin-demo")
    response = admin_client.post(
        "/admin/attachments/session/",
        {"action": "purge_sessions", "_selected_action": [session.pk]},
        follow=True,
    )
    assert "1 session purged." in response.content.decode()
    session.refresh_from_db()
    assert session.purged_at is not None
    assert not session.directory.exists()


def test_rebuild_action_restores_records_from_the_manifest(admin_client, uploaded):
    session = Session.objects.get(session_id="admin-demo")
    session.attachments.all().delete()
    response = admin_client.post(
        "/admin/attachments/session/",
        {"action": "rebuild_from_manifest", "_selected_action": [session.pk]},
        follow=True,
    )
    assert "Session admin-demo: 1 created, 0 updated, 0 removed" in response.content.decode()
    assert session.attachments.count() == 1
