"""The embedded default serves the admin's assets itself: no collectstatic, no CDN."""

from __future__ import annotations

import httpx
import pytest

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]


def test_admin_assets_are_served(server):
    with server("uvicorn") as s:
        response = httpx.get(s.url + "/static/admin/css/base.css")
    assert response.status_code == 200
    assert "text/css" in response.headers["content-type"]
