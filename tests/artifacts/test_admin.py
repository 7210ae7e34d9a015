"""The artifact event log in the admin: browsable and filterable, never editable."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from tests.attachments.builders import PNG_1x1, attach, new_session

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def events():
    first, second = new_session("first"), new_session("second")
    attach(first, "notes.md", b"# Notes\n")
    attach(second, "dot.png", PNG_1x1)


def test_lists_events_with_useful_columns(admin_client, events):
    page = admin_client.get("/admin/artifacts/artifactevent/").content.decode()
    assert "notes.md" in page and "dot.png" in page
    assert "text/markdown" in page and "image/png" in page


@pytest.mark.parametrize(
    ("query", "shown", "hidden"),
    [
        ("kind__exact=image", "dot.png", "notes.md"),
        ("mime=text/markdown", "notes.md", "dot.png"),
        ("session__session_id__exact=first", "notes.md", "dot.png"),
        ("change_type__exact=created", "notes.md", "nothing-else"),
    ],
)
def test_filters(admin_client, events, query, shown, hidden):
    page = admin_client.get(f"/admin/artifacts/artifactevent/?{query}").content.decode()
    assert shown in page and hidden not in page


def test_read_only(admin_client, events):
    from artifacts.models import ArtifactEvent

    event = ArtifactEvent.objects.first()
    assert admin_client.get("/admin/artifacts/artifactevent/add/").status_code == 403
    change = admin_client.post(f"/admin/artifacts/artifactevent/{event.pk}/change/", {"name": "x"})
    assert change.status_code == 403
    event.refresh_from_db()
    assert event.name != "x"
