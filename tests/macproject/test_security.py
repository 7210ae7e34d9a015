"""Response headers, CORS, and what an unexpected failure shows (nothing)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from django.test import Client, override_settings

from tests.attachments.builders import attach, bearer, new_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.access_policy("token")]

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


# The dashboard may carry a session token in its address, so it sends no referrer at all.
STRICTER_ON = {"/": {"Referrer-Policy": "no-referrer"}}


def expected_headers(url: str) -> dict[str, str]:
    return {**SECURITY_HEADERS, **STRICTER_ON.get(url, {})}


@pytest.fixture
def session():
    session = new_session()
    session.file = attach(session, "a.txt", b"hello")
    return session


def asgi(method: str, url: str, **headers: str) -> httpx.Response:
    from macproject.asgi import application

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, url, headers=headers)

    return asyncio.run(run())


class TestSecurityHeaders:
    def urls(self, session) -> list[str]:
        base = f"/api/sessions/{session.session_id}"
        return [
            base,
            f"{base}/artifacts/{session.file.attachment_id}?mode=stream",
            f"{base}/download",
            "/api/sessions/unknown",  # an error
            "/api/nowhere",  # Django's own 404
            "/",
            # The event feed, which the ASGI fast path answers before Django.
            f"{base}/artifact-events?after=0",
            f"{base}/artifact-events?after=99",  # 410
            "/api/sessions/unknown/artifact-events",
            f"{base}/artifact-events/stream?after=99",  # 410, before any event
            "/api/sessions/unknown/artifact-events/stream",
        ]

    def test_on_every_kind_of_response(self, session):
        for url in self.urls(session):
            response = Client().get(url, **bearer(session.token))
            for name, value in expected_headers(url).items():
                assert response.headers.get(name) == value, (url, name)

    def test_under_asgi_and_on_a_streamed_upload(self, session):
        for url in self.urls(session):
            response = asgi("GET", url, authorization=f"Bearer {session.token}")
            for name, value in expected_headers(url).items():
                assert response.headers.get(name) == value, (url, name)

        async def upload() -> httpx.Response:
            from macproject.asgi import application

            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await client.post(
                    f"/api/uploads/{session.session_id}",
                    files={"file": ("b.txt", b"b")},
                    headers={"authorization": f"Bearer {session.token}"},
                )

        response = asyncio.run(upload())
        assert response.status_code == 201
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value


@override_settings(SECURE_REFERRER_POLICY="no-referrer", X_FRAME_OPTIONS="SAMEORIGIN")
def test_the_feed_follows_the_same_settings(session):
    url = f"/api/sessions/{session.session_id}/artifact-events?after=0"
    response = asgi("GET", url, authorization=f"Bearer {session.token}")
    assert response.status_code == 200
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"


def test_the_feed_follows_settings_changed_after_its_first_response(session):
    """The fast path builds its middleware once; a change of settings builds it again."""
    url = f"/api/sessions/{session.session_id}/artifact-events?after=0"
    before = asgi("GET", url, authorization=f"Bearer {session.token}")
    with override_settings(SECURE_REFERRER_POLICY="no-referrer"):
        during = asgi("GET", url, authorization=f"Bearer {session.token}")
    after = asgi("GET", url, authorization=f"Bearer {session.token}")
    assert during.headers["Referrer-Policy"] == "no-referrer"
    assert before.headers["Referrer-Policy"] == after.headers["Referrer-Policy"] != "no-referrer"


def test_the_feed_runs_only_the_middleware_the_project_lists(session, settings):
    settings.MIDDLEWARE = [
        m for m in settings.MIDDLEWARE if not m.endswith("XFrameOptionsMiddleware")
    ]
    url = f"/api/sessions/{session.session_id}/artifact-events?after=0"
    response = asgi("GET", url, authorization=f"Bearer {session.token}")
    assert "X-Frame-Options" not in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@override_settings(ALLOWED_HOSTS=["testserver"])
def test_the_feed_checks_the_host_as_the_rest_does(session):
    """Django's own host check, on the fast path too: a foreign Host gets the same JSON 400."""
    auth = {"authorization": f"Bearer {session.token}"}
    base = f"/api/sessions/{session.session_id}"
    for url in (f"{base}/artifact-events?after=0", f"{base}/artifact-events/stream?after=0"):
        feed = asgi("GET", url, host="evil.example", **auth)
        rest = asgi("GET", base, host="evil.example", **auth)
        assert feed.status_code == rest.status_code == 400, url
        assert feed.json()["code"] == rest.json()["code"]
        assert feed.headers["X-Content-Type-Options"] == "nosniff"
    assert asgi("GET", f"{base}/artifact-events?after=0", **auth).status_code == 200


@override_settings(SECURE_SSL_REDIRECT=True)
def test_the_feed_redirects_to_https_as_the_rest_does(session):
    url = f"/api/sessions/{session.session_id}/artifact-events?after=0"
    response = asgi("GET", url, authorization=f"Bearer {session.token}")
    assert response.status_code == 301
    assert response.headers["Location"] == "https://testserver" + url


def test_an_open_event_stream_carries_them_too(session):
    """A 200 event stream never ends, so it is read with an ASGI communicator, headers only."""
    from tests.artifacts.sse_client import SSEClient

    async def headers() -> dict[str, str]:
        client = SSEClient(
            f"/api/sessions/{session.session_id}/artifact-events/stream?after=0",
            authorization=f"Bearer {session.token}",
        )
        try:
            assert await client.start() == 200
            return client.headers
        finally:
            await client.close()

    received = asyncio.run(headers())
    assert received["content-type"].startswith("text/event-stream")
    for name, value in SECURITY_HEADERS.items():
        assert received.get(name.lower()) == value, name


class TestCors:
    ORIGIN = "https://dashboard.example"

    def test_off_by_default(self, session):
        response = Client().get(
            f"/api/sessions/{session.session_id}", HTTP_ORIGIN=self.ORIGIN, **bearer(session.token)
        )
        assert response.status_code == 200
        assert "Access-Control-Allow-Origin" not in response.headers
        preflight = Client().options(
            f"/api/uploads/{session.session_id}",
            HTTP_ORIGIN=self.ORIGIN,
            HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        )
        assert "Access-Control-Allow-Origin" not in preflight.headers

    @override_settings(CORS_ALLOWED_ORIGINS=[ORIGIN])
    def test_listed_origins_may_call_the_api_with_a_token(self, session):
        preflight = Client().options(
            f"/api/uploads/{session.session_id}",
            HTTP_ORIGIN=self.ORIGIN,
            HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
            HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization",
        )
        assert preflight.status_code == 200
        assert preflight.headers["Access-Control-Allow-Origin"] == self.ORIGIN
        assert "authorization" in preflight.headers["Access-Control-Allow-Headers"]
        assert "Access-Control-Allow-Credentials" not in preflight.headers
        response = asgi(
            "GET",
            f"/api/sessions/{session.session_id}/artifacts/{session.file.attachment_id}?mode=stream",
            origin=self.ORIGIN,
            authorization=f"Bearer {session.token}",
        )
        assert response.headers["Access-Control-Allow-Origin"] == self.ORIGIN
        assert "content-disposition" in response.headers["Access-Control-Expose-Headers"].lower()

    @override_settings(CORS_ALLOWED_ORIGINS=[ORIGIN])
    @pytest.mark.parametrize("path", ["artifact-events?after=0", "artifact-events/stream?after=9"])
    def test_the_event_feed_answers_listed_origins_as_the_rest_does(self, session, path):
        url = f"/api/sessions/{session.session_id}/{path}"
        auth = {"authorization": f"Bearer {session.token}"}
        fast = asgi("GET", url, origin=self.ORIGIN, **auth)
        django = Client().get(url, HTTP_ORIGIN=self.ORIGIN, **bearer(session.token))
        assert fast.status_code == django.status_code
        for name in ("Access-Control-Allow-Origin", "Access-Control-Expose-Headers"):
            assert fast.headers.get(name) == django.headers.get(name), name
        assert fast.headers["Access-Control-Allow-Origin"] == self.ORIGIN
        assert "origin" in fast.headers["Vary"].lower()
        other = asgi("GET", url, origin="https://evil.example", **auth)
        assert "Access-Control-Allow-Origin" not in other.headers

    @override_settings(CORS_ALLOWED_ORIGINS=[ORIGIN])
    def test_other_origins_and_other_paths_get_nothing(self, session):
        other = Client().get(
            f"/api/sessions/{session.session_id}", HTTP_ORIGIN="https://evil.example"
        )
        assert "Access-Control-Allow-Origin" not in other.headers
        admin = Client().get("/admin/login/", HTTP_ORIGIN=self.ORIGIN)
        assert "Access-Control-Allow-Origin" not in admin.headers

    def test_the_environment_variable_feeds_the_setting(self):
        import os
        import subprocess
        import sys

        code = "from macproject import settings; print(settings.CORS_ALLOWED_ORIGINS)"
        env = {**os.environ, "MAC_CORS_ALLOWED_ORIGINS": "https://a.example, https://b.example"}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.stdout.strip() == "['https://a.example', 'https://b.example']"
        env.pop("MAC_CORS_ALLOWED_ORIGINS")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.stdout.strip() == "[]"


class TestUnexpectedErrors:
    EXPECTED = {"detail": "The server failed to handle this request.", "code": "server_error"}

    @pytest.fixture(autouse=True)
    def crashing_urls(self, settings):
        settings.ROOT_URLCONF = "tests.macproject.urls_crash"
        settings.DEBUG = False

    @pytest.mark.parametrize("url", ["/api/crash", "/api/plain-crash"])
    def test_a_crash_is_a_json_500_without_internals(self, url):
        response = Client(raise_request_exception=False).get(url)
        assert response.status_code == 500
        assert response.json() == self.EXPECTED
        assert b"Traceback" not in response.content and b"secret" not in response.content

    @pytest.mark.parametrize("url", ["/api/crash", "/api/plain-crash"])
    def test_the_same_under_asgi(self, url):
        response = asgi("GET", url)
        assert response.status_code == 500
        assert response.json() == self.EXPECTED
        assert "Traceback" not in response.text and "secret" not in response.text
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value


def test_the_product_settings_default_to_the_token_policy():
    import os
    import subprocess
    import sys

    code = "from macproject import settings; print(settings.ATTACHMENTS_ACCESS_POLICY)"
    env = {k: v for k, v in os.environ.items() if k != "MAC_ACCESS_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "token"
