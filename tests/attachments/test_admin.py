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


@pytest.mark.parametrize("query", ["kind__exact=file", "source__exact=user_upload", "mime=text/markdown"])
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
    page = admin_client.get(f"/admin/attachments/attachment/?q={uploaded['attachment_id']}").content.decode()
    assert "report.md" in page


def test_session_list_and_detail(admin_client, uploaded):
    listing = admin_client.get("/admin/attachments/session/?q=admin-demo").content.decode()
    assert "admin-demo" in listing
    session_pk = Session.objects.get(session_id="admin-demo").pk
    detail = admin_client.get(f"/admin/attachments/session/{session_pk}/change/")
    assert detail.status_code == 200
    assert "report.md" in detail.content.decode()
