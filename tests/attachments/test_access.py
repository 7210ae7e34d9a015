"""attachments.access: credentials, and who reaches which session."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import RequestFactory, override_settings

from attachments import links
from attachments.access import (
    Credentials,
    credentials_from_request,
    credentials_from_scope,
    jwt_sessions,
    session_for,
)
from attachments.apps import warn_if_open
from attachments.checks import check_settings
from attachments.exceptions import CsrfFailed, InvalidSessionId, SessionNotFound
from attachments.sessions import purge_session

from .builders import JWT_SECRET, make_jwt, new_session

pytestmark = [pytest.mark.django_db, pytest.mark.access_policy("token")]


def user(name: str, **fields):
    return get_user_model().objects.create_user(name, **fields)


def refused(credentials: Credentials, session_id: str) -> None:
    with pytest.raises(SessionNotFound):
        session_for(credentials, session_id)


class TestTokens:
    def test_a_new_session_has_a_long_random_token(self):
        first, second = new_session(), new_session()
        assert len(first.token) >= 43 and first.token != second.token

    def test_only_its_hash_is_stored(self):
        session = new_session()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT * FROM attachments_session WHERE session_id = %s", [session.session_id]
            )
            row = cursor.fetchone()
        assert session.token not in [str(value) for value in row]
        assert hashlib.sha256(session.token.encode()).hexdigest() in row

    def test_a_fetched_session_does_not_know_its_token(self):
        session = new_session()
        assert session_for(Credentials(bearer=session.token), session.session_id).token is None


class TestSessionFor:
    def test_the_session_token_reaches_it(self):
        session = new_session()
        assert session_for(Credentials(bearer=session.token), session.session_id) == session

    @pytest.mark.parametrize("bearer", [None, "", "wrong", "x" * 43])
    def test_missing_or_wrong_tokens_are_404(self, bearer):
        refused(Credentials(bearer=bearer or None), new_session().session_id)

    def test_another_sessions_token_is_404(self):
        mine, other = new_session(), new_session()
        refused(Credentials(bearer=other.token), mine.session_id)

    def test_a_purged_session_is_404_even_with_its_token(self):
        session = new_session()
        purge_session(session)
        refused(Credentials(bearer=session.token), session.session_id)

    def test_a_malformed_id_is_still_400(self):
        with pytest.raises(InvalidSessionId):
            session_for(Credentials(), "bad.id")

    def test_a_session_without_token_hash_is_not_reached_by_an_empty_token(self):
        session = new_session()
        type(session).objects.filter(pk=session.pk).update(token_hash="")
        refused(Credentials(bearer=""), session.session_id)
        refused(Credentials(bearer=session.token), session.session_id)


class TestUsers:
    def test_the_owner_reaches_their_session(self):
        owner = user("owner")
        session = new_session(owner=owner)
        assert session_for(Credentials(user=owner), session.session_id) == session

    def test_another_user_does_not(self):
        session = new_session(owner=user("owner"))
        refused(Credentials(user=user("other")), session.session_id)

    def test_nobody_owns_an_anonymous_session(self):
        refused(Credentials(user=user("someone")), new_session().session_id)

    @pytest.mark.parametrize("flag", ["is_staff", "is_superuser"])
    def test_staff_reach_every_session(self, flag):
        admin = user("admin", **{flag: True})
        session = new_session(owner=user("owner"))
        assert session_for(Credentials(user=admin), session.session_id) == session

    def test_a_csrf_failure_is_403_whether_or_not_the_session_exists(self):
        credentials = Credentials(csrf_failed=True)
        for session_id in (new_session().session_id, "does-not-exist"):
            with pytest.raises(CsrfFailed):
                session_for(credentials, session_id)


class TestJWT:
    @pytest.fixture(autouse=True)
    def jwt_secret(self, settings):
        settings.ATTACHMENTS_JWT_SECRET = JWT_SECRET

    def test_a_sessions_claim_reaches_each_session_it_names(self):
        first, second, third = new_session(), new_session(), new_session()
        token = make_jwt(sessions=[first.session_id, second.session_id])
        assert session_for(Credentials(bearer=token), first.session_id) == first
        assert session_for(Credentials(bearer=token), second.session_id) == second
        refused(Credentials(bearer=token), third.session_id)

    def test_a_sid_claim_reaches_its_session(self):
        session = new_session()
        token = make_jwt(sid=session.session_id)
        assert session_for(Credentials(bearer=token), session.session_id) == session

    @pytest.mark.parametrize(
        "token",
        [
            pytest.param(lambda sid: make_jwt(sid=sid, expires_in=-5), id="expired"),
            pytest.param(lambda sid: make_jwt(sid=sid, exp=None), id="no-exp"),
            pytest.param(lambda sid: make_jwt("another-secret-" * 3, sid=sid), id="wrong-secret"),
            pytest.param(lambda sid: make_jwt(sid=[sid]), id="sid-not-a-string"),
            pytest.param(lambda sid: make_jwt(sessions=sid), id="sessions-not-a-list"),
            pytest.param(lambda sid: make_jwt(sid=sid)[:-2], id="tampered"),
            pytest.param(lambda sid: _unsigned_jwt(sid), id="alg-none"),
        ],
    )
    def test_bad_jwts_are_404(self, token):
        session = new_session()
        refused(Credentials(bearer=token(session.session_id)), session.session_id)

    @override_settings(ATTACHMENTS_JWT_SECRET=None)
    def test_jwts_are_refused_when_no_secret_is_set(self):
        session = new_session()
        refused(Credentials(bearer=make_jwt(sid=session.session_id)), session.session_id)

    @override_settings(ATTACHMENTS_JWT_ISSUER="portal", ATTACHMENTS_JWT_AUDIENCE="attachments")
    def test_issuer_and_audience_are_checked_when_set(self):
        sid = new_session().session_id
        good = make_jwt(sid=sid, iss="portal", aud="attachments")
        assert jwt_sessions(good) == {sid}
        for claims in ({"iss": "evil", "aud": "attachments"}, {"iss": "portal", "aud": "x"}, {}):
            assert jwt_sessions(make_jwt(sid=sid, **claims)) == frozenset()


def _unsigned_jwt(session_id: str) -> str:
    import base64
    import json

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"sid": session_id, "exp": int(time.time()) + 300}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


class TestSignedLinks:
    def test_a_link_reaches_only_its_target(self):
        session = new_session()
        target = links.LinkTarget(session.session_id, "att_aaaaaaaaaaaaaaaa")
        credentials = Credentials(signature=links.sign(target, 60))
        assert session_for(credentials, session.session_id, target) == session
        for other in (
            links.LinkTarget(session.session_id, "att_bbbbbbbbbbbbbbbb"),
            links.LinkTarget(session.session_id),
        ):
            with pytest.raises(SessionNotFound):
                session_for(credentials, session.session_id, other)
        refused(credentials, session.session_id)  # where no link is accepted

    def test_a_link_expires(self, monkeypatch):
        session = new_session()
        target = links.LinkTarget(session.session_id)
        signature = links.sign(target, 60)
        assert links.is_valid(signature, target)
        later = time.time() + 61
        monkeypatch.setattr("django.core.signing.time.time", lambda: later)
        assert not links.is_valid(signature, target)

    def test_lowering_the_max_age_shortens_links_already_given(self, monkeypatch, settings):
        target = links.LinkTarget(new_session().session_id)
        signature = links.sign(target, 3600)
        later = time.time() + 120
        monkeypatch.setattr("django.core.signing.time.time", lambda: later)
        assert links.is_valid(signature, target)
        settings.ATTACHMENTS_SIGNED_LINK_MAX_AGE = 60
        assert not links.is_valid(signature, target)

    @pytest.mark.parametrize("signature", ["", "x", "60:abc:def", "9999999:1:2"])
    def test_garbage_is_invalid(self, signature):
        assert not links.is_valid(signature, links.LinkTarget("s"))


class TestOpenPolicy:
    @pytest.mark.access_policy("open")
    def test_the_id_alone_reaches_a_session(self):
        session = new_session(owner=user("owner"))
        assert session_for(Credentials(), session.session_id) == session

    @pytest.mark.access_policy("open")
    def test_unknown_sessions_are_still_404(self):
        refused(Credentials(), "unknown")

    @pytest.mark.access_policy("open")
    def test_it_is_logged_as_a_warning(self, caplog):
        with caplog.at_level(logging.WARNING, logger="attachments.access"):
            warn_if_open()
        assert "open" in caplog.text and "attachments.W020" in caplog.text
        assert [m.id for m in check_settings()] == ["attachments.W020"]

    def test_the_token_policy_logs_nothing(self, caplog):
        with caplog.at_level(logging.WARNING, logger="attachments.access"):
            warn_if_open()
        assert caplog.text == ""

    def test_the_product_default_is_token(self, settings):
        del settings.ATTACHMENTS_ACCESS_POLICY
        refused(Credentials(), new_session().session_id)


class TestCredentialsFromRequest:
    factory = RequestFactory()

    def test_bearer_header(self):
        request = self.factory.get("/", HTTP_AUTHORIZATION="Bearer abc")
        assert credentials_from_request(request).bearer == "abc"

    def test_token_and_sig_query_parameters(self):
        request = self.factory.get("/?token=abc&sig=xyz")
        credentials = credentials_from_request(request)
        assert (credentials.bearer, credentials.signature) == ("abc", "xyz")

    @pytest.mark.parametrize("header", ["Basic abc", "Token abc", "Bearer", "abc"])
    def test_other_authorization_schemes_are_no_bearer(self, header):
        request = self.factory.get("/", HTTP_AUTHORIZATION=header)
        assert credentials_from_request(request).bearer is None

    def test_a_signed_in_user_counts_on_safe_methods(self):
        request = self.factory.get("/")
        request.user = user("u")
        assert credentials_from_request(request).user == request.user

    def test_an_inactive_user_does_not_count(self):
        request = self.factory.get("/")
        request.user = user("u", is_active=False)
        assert credentials_from_request(request).user is None

    def test_unsafe_methods_need_the_csrf_header(self):
        from django.middleware.csrf import _get_new_csrf_string, _mask_cipher_secret

        secret = _get_new_csrf_string()
        request = self.factory.post("/", {"csrfmiddlewaretoken": _mask_cipher_secret(secret)})
        request.COOKIES["csrftoken"] = secret
        request.user = user("u")
        credentials = credentials_from_request(request)
        # The form field is not read (it would consume an upload's body): header only.
        assert (credentials.user, credentials.csrf_failed) == (None, True)
        request = self.factory.post("/", HTTP_X_CSRFTOKEN=_mask_cipher_secret(secret))
        request.COOKIES["csrftoken"] = secret
        request.user = user("v")
        assert credentials_from_request(request).user == request.user


class TestCredentialsFromScope:
    def scope(self, kind: str, headers: list, query: bytes = b"", method: str = "GET") -> dict:
        scope = {
            "type": kind,
            "path": "/ws",
            "query_string": query,
            "headers": [(b"host", b"testserver"), *headers],
            "client": ("127.0.0.1", 1),
            "server": ("testserver", 80),
        }
        if kind == "http":
            scope["method"] = method
        return scope

    def test_bearer_and_query_token(self):
        scope = self.scope("http", [(b"authorization", b"Bearer abc")])
        assert asyncio.run(credentials_from_scope(scope)).bearer == "abc"
        scope = self.scope("websocket", [], query=b"session_id=s&token=xyz")
        assert asyncio.run(credentials_from_scope(scope)).bearer == "xyz"

    @pytest.mark.django_db(transaction=True)
    def test_the_session_cookie_names_the_user(self, client):
        owner = user("owner")
        client.force_login(owner)
        cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
        scope = self.scope("http", [(b"cookie", cookie)])
        assert asyncio.run(credentials_from_scope(scope)).user == owner

    @pytest.mark.django_db(transaction=True)
    @pytest.mark.parametrize(
        ("origin", "counts"),
        [(None, True), (b"http://testserver", True), (b"https://evil.example", False)],
    )
    def test_a_websocket_user_counts_only_from_this_origin(self, origin, counts):
        owner = user("owner")
        headers = [(b"origin", origin)] if origin else []
        scope = {**self.scope("websocket", headers), "user": owner}
        assert (asyncio.run(credentials_from_scope(scope)).user == owner) is counts

    @pytest.mark.django_db(transaction=True)
    @override_settings(CSRF_TRUSTED_ORIGINS=["https://*.example.com"])
    def test_trusted_origins_count_for_websockets(self):
        owner = user("owner")
        scope = {
            **self.scope("websocket", [(b"origin", b"https://app.example.com")]),
            "user": owner,
        }
        assert asyncio.run(credentials_from_scope(scope)).user == owner
