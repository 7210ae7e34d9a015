"""
The access policy on every session-scoped endpoint: each credential kind
gets in, and everything else gets the very 404 of a session that does not exist.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.middleware.csrf import _get_new_csrf_string, _mask_cipher_secret
from rest_framework.test import APIClient

from attachments.exceptions import SessionNotFound
from attachments.models import Session
from attachments.uploads import STREAMED_UPLOAD_SCOPE_KEY
from attachments.uploads_asgi import StreamingUploadMiddleware

from .builders import (
    JWT_SECRET,
    StreamingPath,
    attach,
    bearer,
    make_jwt,
    multipart,
    new_session,
    response_body,
    uploaded_files,
)
from .test_uploads_asgi import upload_scope

pytestmark = [pytest.mark.django_db, pytest.mark.access_policy("token")]

UNKNOWN = "no-such-session"

# (method, url template, status when allowed); {sid} and {aid} are filled in.
ENDPOINTS = [
    ("get", "/api/sessions/{sid}", 200),
    ("get", "/api/uploads/{sid}", 200),
    ("upload", "/api/uploads/{sid}", 201),
    ("get", "/api/sessions/{sid}/artifacts/{aid}", 200),
    ("get", "/api/sessions/{sid}/artifacts/{aid}?mode=stream", 200),
    ("head", "/api/sessions/{sid}/artifacts/{aid}?mode=stream", 200),
    ("get", "/api/sessions/{sid}/artifacts/{aid}/link", 200),
    ("get", "/api/sessions/{sid}/download", 200),
    ("get", "/api/sessions/{sid}/download/link", 200),
    ("get", "/api/workflow/runs?session_id={sid}", 200),
    ("delete", "/api/sessions/{sid}", 204),
]
ENDPOINT_IDS = [f"{method} {url}" for method, url, _ in ENDPOINTS]


@pytest.fixture(autouse=True)
def jwt_secret(settings):
    settings.ATTACHMENTS_JWT_SECRET = JWT_SECRET
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def make_user(name: str, **fields):
    return get_user_model().objects.create_user(name, password="pw", **fields)


def call(client: APIClient, method: str, url: str, **extra):
    if method == "upload":
        body, content_type = multipart([("file", "note.txt", b"hello")])
        return client.generic("POST", url, body, content_type=content_type, **extra)
    return getattr(client, method)(url, **extra)


def fill(url: str, session_id: str, artifact_id: str = "att_aaaaaaaaaaaaaaaa") -> str:
    return url.format(sid=session_id, aid=artifact_id)


def with_query(url: str, **params: str) -> str:
    from urllib.parse import urlencode

    return url + ("&" if "?" in url else "?") + urlencode(params)


def json_of(response) -> dict | None:
    body = response_body(response)
    return json.loads(body) if body else None


@pytest.fixture
def owner():
    return make_user("owner")


@pytest.fixture
def session(owner):
    session = new_session(owner=owner)
    session.file = attach(session, "note.txt", b"some notes")
    return session


def not_found_answer(method: str, url: str):
    """What the endpoint answers for a session that does not exist, with no credentials."""
    response = call(APIClient(), method, fill(url, UNKNOWN))
    assert response.status_code == 404
    return json_of(response)


def signed_in(who):
    def grant(s, client):
        client.force_login(who(s))
        return {}, {}

    return grant


# Each returns (test-client headers, query parameters) for the session `s`.
GRANTS = {
    "bearer-token": lambda s, client: (bearer(s.token), {}),
    "query-token": lambda s, client: ({}, {"token": s.token}),
    "bearer-jwt": lambda s, client: (bearer(make_jwt(sessions=[s.session_id])), {}),
    "query-jwt-sid": lambda s, client: ({}, {"token": make_jwt(sid=s.session_id)}),
    "owner": signed_in(lambda s: s.owner),
    "staff": signed_in(lambda s: make_user("staff", is_staff=True)),
}


@pytest.mark.parametrize("grant", list(GRANTS))
@pytest.mark.parametrize(("method", "url", "status"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_every_credential_kind_is_accepted(session, grant, method, url, status):
    client = APIClient()
    headers, params = GRANTS[grant](session, client)
    target = fill(url, session.session_id, session.file.attachment_id)
    response = call(client, method, with_query(target, **params) if params else target, **headers)
    assert response.status_code == status, response_body(response)


REFUSALS = {
    "nothing": lambda s, client: ({}, {}),
    "wrong-token": lambda s, client: (bearer("x" * 43), {}),
    "wrong-query-token": lambda s, client: ({}, {"token": "nope"}),
    "another-sessions-token": lambda s, client: (bearer(new_session().token), {}),
    "expired-jwt": lambda s, client: (bearer(make_jwt(sid=s.session_id, expires_in=-10)), {}),
    "jwt-without-exp": lambda s, client: (bearer(make_jwt(sid=s.session_id, exp=None)), {}),
    "jwt-for-another-session": lambda s, client: (bearer(make_jwt(sid="other")), {}),
    "forged-jwt": lambda s, client: (bearer(make_jwt("z" * 40, sid=s.session_id)), {}),
    "another-user": signed_in(lambda s: make_user("intruder")),
    # The owner's password (owner:pw) is no credential of these endpoints.
    "owners-basic-auth": lambda s, client: ({"HTTP_AUTHORIZATION": "Basic b3duZXI6cHc="}, {}),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
@pytest.mark.parametrize(("method", "url", "status"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_anything_else_is_the_404_of_a_missing_session(session, refusal, method, url, status):
    expected = not_found_answer(method, url)
    client = APIClient()
    headers, params = REFUSALS[refusal](session, client)
    target = fill(url, session.session_id, session.file.attachment_id)
    response = call(client, method, with_query(target, **params) if params else target, **headers)
    assert response.status_code == 404
    assert json_of(response) == expected
    if method != "head":
        assert expected == {"detail": "No such session.", "code": "session_not_found"}
    assert Session.objects.live().filter(pk=session.pk).exists()
    assert [p.name for p in uploaded_files(session)] == ["note.txt"]


@pytest.mark.parametrize(("method", "url", "status"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_a_purged_session_is_404_even_with_its_token(session, method, url, status):
    token = session.token
    from attachments.sessions import purge_session

    purge_session(session)
    response = call(APIClient(), method, fill(url, session.session_id), **bearer(token))
    assert response.status_code == 404
    assert json_of(response) == not_found_answer(method, url)


@pytest.mark.access_policy("open")
@pytest.mark.parametrize(("method", "url", "status"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_the_open_policy_needs_the_id_alone(session, method, url, status):
    target = fill(url, session.session_id, session.file.attachment_id)
    assert call(APIClient(), method, target).status_code == status


class TestCreating:
    def test_the_token_is_returned_once_and_works(self):
        response = APIClient().post("/api/sessions", {}, format="json")
        assert response.status_code == 201
        body = response.json()
        assert len(body["token"]) >= 43
        url = f"/api/sessions/{body['session_id']}"
        shown = APIClient().get(url, **bearer(body["token"]))
        assert shown.status_code == 200 and "token" not in shown.json()
        assert APIClient().get(url).status_code == 404

    def test_a_signed_in_user_owns_what_they_create(self, owner):
        client = APIClient()
        client.force_login(owner)
        body = client.post("/api/sessions", {}, format="json").json()
        assert Session.objects.get(session_id=body["session_id"]).owner == owner
        assert client.get(f"/api/sessions/{body['session_id']}").status_code == 200

    def test_anyone_may_create(self):
        assert APIClient().post("/api/sessions", {}, format="json").status_code == 201

    def test_an_anonymous_proposed_id_is_refused_alike_whether_it_exists(self, session):
        answers = [
            APIClient().post("/api/sessions", {"session_id": sid}, format="json")
            for sid in (session.session_id, "run-42-never-made")
        ]
        assert [a.status_code for a in answers] == [403, 403]
        assert answers[0].content == answers[1].content
        assert answers[0].json()["code"] == "session_id_not_allowed"
        assert not Session.objects.filter(session_id="run-42-never-made").exists()
        # A session's token is no authentication for creating another one.
        other = APIClient().post(
            "/api/sessions", {"session_id": "run-43"}, format="json", **bearer(session.token)
        )
        assert other.status_code == 403

    def test_a_signed_in_user_may_propose_an_id(self, owner):
        client = APIClient()
        client.force_login(owner)
        created = client.post("/api/sessions", {"session_id": "run-42"}, format="json")
        assert created.status_code == 201 and created.json()["session_id"] == "run-42"
        again = client.post("/api/sessions", {"session_id": "run-42"}, format="json")
        assert (again.status_code, again.json()["code"]) == (409, "session_exists")

    def test_a_jwt_may_propose_the_id_it_names_only(self):
        token = make_jwt(sid="portal-run-7")
        refused = APIClient().post(
            "/api/sessions", {"session_id": "portal-run-8"}, format="json", **bearer(token)
        )
        assert refused.status_code == 403
        created = APIClient().post(
            "/api/sessions", {"session_id": "portal-run-7"}, format="json", **bearer(token)
        )
        assert created.status_code == 201
        shown = APIClient().get("/api/sessions/portal-run-7", **bearer(token))
        assert shown.status_code == 200

    @pytest.mark.access_policy("open")
    def test_the_open_policy_takes_proposed_ids_from_anyone(self):
        created = APIClient().post("/api/sessions", {"session_id": "open-1"}, format="json")
        assert created.status_code == 201

    def test_creation_can_be_throttled(self, settings):
        settings.ATTACHMENTS_SESSION_CREATE_RATE = "2/minute"
        cache.clear()
        try:
            codes = [APIClient().post("/api/sessions").status_code for _ in range(3)]
            refused = APIClient().post("/api/sessions")
        finally:
            cache.clear()
        assert codes == [201, 201, 429]
        assert refused.json()["code"] == "throttled" and "Retry-After" in refused.headers
        assert Session.objects.count() == 2

    def test_no_throttle_by_default(self):
        assert {APIClient().post("/api/sessions").status_code for _ in range(20)} == {201}


class TestCsrf:
    """A signed-in browser's unsafe requests carry the CSRF token in a header."""

    def client_with_csrf(self, user):
        client = APIClient(enforce_csrf_checks=True)
        client.force_login(user)
        secret = _get_new_csrf_string()
        client.cookies["csrftoken"] = secret
        return client, _mask_cipher_secret(secret)

    def test_without_it_an_owners_delete_is_403_and_changes_nothing(self, session, owner):
        client, _ = self.client_with_csrf(owner)
        for session_id in (session.session_id, UNKNOWN):
            response = client.delete(f"/api/sessions/{session_id}")
            assert (response.status_code, response.json()["code"]) == (403, "csrf_failed")
        assert Session.objects.live().filter(pk=session.pk).exists()

    def test_with_it_the_owner_deletes(self, session, owner):
        client, token = self.client_with_csrf(owner)
        response = client.delete(f"/api/sessions/{session.session_id}", HTTP_X_CSRFTOKEN=token)
        assert response.status_code == 204

    def test_an_upload_reads_the_header_not_the_body(self, session, owner):
        client, token = self.client_with_csrf(owner)
        body, content_type = multipart([("file", "a.txt", b"a")])
        url = f"/api/uploads/{session.session_id}"
        refused = client.generic("POST", url, body, content_type=content_type)
        assert refused.status_code == 403
        accepted = client.generic(
            "POST", url, body, content_type=content_type, HTTP_X_CSRFTOKEN=token
        )
        assert accepted.status_code == 201, accepted.content

    def test_a_bearer_token_needs_no_csrf(self, session, owner):
        client, _ = self.client_with_csrf(owner)
        response = client.delete(f"/api/sessions/{session.session_id}", **bearer(session.token))
        assert response.status_code == 204

    def test_creating_while_signed_in_needs_it(self, owner):
        client, token = self.client_with_csrf(owner)
        assert client.post("/api/sessions").json()["code"] == "csrf_failed"
        assert client.post("/api/sessions", HTTP_X_CSRFTOKEN=token).status_code == 201


@pytest.mark.django_db(transaction=True)
class TestStreamingUploads:
    """The ASGI upload path checks access before it reads a byte of the body."""

    def attachments_dir(self, session):
        return session.directory / "code_workspace" / "attachments"

    def test_refused_before_anything_is_written(self, session):
        before = sorted(p.name for p in self.attachments_dir(session).iterdir())
        body, content_type = multipart([("file", "x.bin", b"x" * 200_000)])
        for headers in ({}, {"authorization": "Bearer wrong"}):
            reply = StreamingPath(headers).post(
                f"/api/uploads/{session.session_id}", body, content_type
            )
            assert (reply.status, reply.body) == (
                404,
                {"detail": "No such session.", "code": "session_not_found"},
            )
        assert sorted(p.name for p in self.attachments_dir(session).iterdir()) == before

    def test_the_body_is_not_read_when_refused(self, session):
        body, content_type = multipart([("file", "x.bin", b"x" * 10_000)])
        scope = upload_scope(f"/api/uploads/{session.session_id}", len(body), content_type)
        reads = []
        seen = []

        async def django_app(scope, receive, send):
            seen.append((len(reads), scope[STREAMED_UPLOAD_SCOPE_KEY].error))

        async def receive():
            reads.append(1)
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            pass

        asyncio.run(StreamingUploadMiddleware(django_app)(scope, receive, send))
        assert seen and seen[0][0] == 0 and isinstance(seen[0][1], SessionNotFound)

    @pytest.mark.parametrize("where", ["header", "query"])
    def test_the_token_lets_it_through(self, session, where):
        body, content_type = multipart([("file", "y.txt", b"yes")])
        url = f"/api/uploads/{session.session_id}"
        headers = {"authorization": f"Bearer {session.token}"} if where == "header" else {}
        if where == "query":
            url += f"?token={session.token}"
        reply = StreamingPath(headers).post(url, body, content_type)
        assert reply.status == 201, reply.body

    def cookie_headers(self, session, owner, client, csrf: bool) -> dict[str, str]:
        client.force_login(owner)
        secret = _get_new_csrf_string()
        headers = {"cookie": f"sessionid={client.cookies['sessionid'].value}; csrftoken={secret}"}
        if csrf:
            headers["x-csrftoken"] = _mask_cipher_secret(secret)
        return headers

    def test_a_signed_in_owner_needs_the_csrf_header(self, session, owner, client):
        before = sorted(p.name for p in self.attachments_dir(session).iterdir())
        body, content_type = multipart([("file", "z.txt", b"zzz")])
        url = f"/api/uploads/{session.session_id}"
        refused = StreamingPath(self.cookie_headers(session, owner, client, csrf=False)).post(
            url, body, content_type
        )
        assert (refused.status, refused.body["code"]) == (403, "csrf_failed")
        assert sorted(p.name for p in self.attachments_dir(session).iterdir()) == before
        accepted = StreamingPath(self.cookie_headers(session, owner, client, csrf=True)).post(
            url, body, content_type
        )
        assert accepted.status == 201, accepted.body

    def test_another_users_cookie_is_404(self, session, client):
        intruder = make_user("intruder")
        body, content_type = multipart([("file", "z.txt", b"zzz")])
        reply = StreamingPath(self.cookie_headers(session, intruder, client, csrf=True)).post(
            f"/api/uploads/{session.session_id}", body, content_type
        )
        assert (reply.status, reply.body["code"]) == (404, "session_not_found")
