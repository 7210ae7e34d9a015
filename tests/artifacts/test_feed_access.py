"""The access policy on the event feed's HTTP endpoints: long-poll and Server-Sent Events."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from rest_framework.test import APIClient

from attachments.sessions import create_session
from macproject.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.access_policy("token")]

NOT_FOUND = {"detail": "No such session.", "code": "session_not_found"}


@pytest.fixture
def session():
    return create_session()


@pytest.fixture
def other():
    return create_session()


class TestLongPollThroughDjango:
    def test_with_the_token(self, session):
        response = APIClient().get(
            f"/api/sessions/{session.session_id}/artifact-events",
            HTTP_AUTHORIZATION=f"Bearer {session.token}",
        )
        assert response.status_code == 200
        assert response.json()["events"] == []

    @pytest.mark.parametrize("token", [None, "wrong", "other"])
    def test_refused_like_an_unknown_session(self, session, other, token):
        headers = {}
        if token:
            headers["HTTP_AUTHORIZATION"] = f"Bearer {other.token if token == 'other' else token}"
        response = APIClient().get(f"/api/sessions/{session.session_id}/artifact-events", **headers)
        assert (response.status_code, response.json()) == (404, NOT_FOUND)


def asgi_get(path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """A GET through the project's ASGI stack, where the feed middleware serves these routes."""

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            return await client.get(path, headers=headers or {})

    return asyncio.run(run())


class TestThroughTheFeedMiddleware:
    def test_long_poll_with_the_token_as_a_query_parameter(self, session):
        response = asgi_get(
            f"/api/sessions/{session.session_id}/artifact-events?token={session.token}"
        )
        assert response.status_code == 200
        assert response.json()["events"] == []

    @pytest.mark.parametrize("suffix", ["", "/stream"])
    def test_refused_like_an_unknown_session(self, session, other, suffix):
        path = f"/api/sessions/{session.session_id}/artifact-events{suffix}"
        for headers in ({}, {"Authorization": f"Bearer {other.token}"}):
            response = asgi_get(path, headers)
            assert (response.status_code, json.loads(response.content)) == (404, NOT_FOUND)
