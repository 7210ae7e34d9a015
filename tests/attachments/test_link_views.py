"""Signed, expiring links to one artifact or to the session zip."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from rest_framework.test import APIClient

from .builders import assert_error, attach, bearer, new_session, response_body

pytestmark = [pytest.mark.django_db, pytest.mark.access_policy("token")]

NOT_FOUND = {"detail": "No such session.", "code": "session_not_found"}


@pytest.fixture
def session():
    session = new_session()
    session.files = [attach(session, "a.txt", b"first"), attach(session, "b.txt", b"second")]
    return session


def mint(session, path: str, **params):
    response = APIClient().get(
        f"/api/sessions/{session.session_id}/{path}", params, **bearer(session.token)
    )
    assert response.status_code == 200, response.content
    return response.json()


def relative(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def later(monkeypatch, seconds: float) -> None:
    moment = time.time() + seconds
    monkeypatch.setattr("django.core.signing.time.time", lambda: moment)


def test_an_artifact_link_opens_its_bytes_without_credentials(session):
    first = session.files[0]
    link = mint(session, f"artifacts/{first.attachment_id}/link", download="true")
    assert link["url"].startswith("http://testserver/api/sessions/")
    assert link["expires_in"] == 3600
    query = parse_qs(urlsplit(link["url"]).query)
    assert query["mode"] == ["stream"] and query["download"] == ["true"] and query["sig"]
    assert "token" not in query
    response = APIClient().get(relative(link["url"]))
    assert response.status_code == 200
    assert response_body(response) == b"first"
    assert response["Content-Disposition"].startswith("attachment")


def test_a_zip_link_opens_the_zip(session):
    link = mint(session, "download/link")
    response = APIClient().get(relative(link["url"]))
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"


def test_a_link_opens_nothing_else(session):
    first, second = session.files
    sig = parse_qs(urlsplit(mint(session, f"artifacts/{first.attachment_id}/link")["url"]).query)[
        "sig"
    ][0]
    base = f"/api/sessions/{session.session_id}"
    other = new_session()
    for url in (
        f"{base}/artifacts/{second.attachment_id}?mode=stream&sig={sig}",
        f"{base}/download?sig={sig}",
        f"{base}?sig={sig}",
        f"/api/uploads/{session.session_id}?sig={sig}",
        f"{base}/artifacts/{first.attachment_id}/link?sig={sig}",
        f"/api/sessions/{other.session_id}/artifacts/{first.attachment_id}?mode=stream&sig={sig}",
    ):
        response = APIClient().get(url)
        assert (response.status_code, response.json()) == (404, NOT_FOUND), url


def test_a_link_opens_only_the_mode_and_disposition_it_was_made_for(session):
    first = session.files[0]
    base = f"/api/sessions/{session.session_id}/artifacts/{first.attachment_id}"
    inline_link = mint(session, f"artifacts/{first.attachment_id}/link")
    inline_sig = parse_qs(urlsplit(inline_link["url"]).query)["sig"][0]
    download_link = mint(session, f"artifacts/{first.attachment_id}/link", download="true")
    download_sig = parse_qs(urlsplit(download_link["url"]).query)["sig"][0]
    for url in (
        f"{base}?mode=meta&sig={inline_sig}",
        f"{base}?sig={inline_sig}",
        f"{base}?mode=stream&download=true&sig={inline_sig}",
        f"{base}?mode=stream&sig={download_sig}",
        f"{base}?mode=stream&download=false&sig={download_sig}",
        f"{base}?mode=meta&download=true&sig={download_sig}",
    ):
        response = APIClient().get(url)
        assert (response.status_code, response.json()) == (404, NOT_FOUND), url
    opened = APIClient().get(f"{base}?mode=stream&sig={inline_sig}")
    assert opened.status_code == 200 and opened["Content-Disposition"].startswith("inline")


def test_a_zip_link_does_not_open_an_artifact(session):
    sig = parse_qs(urlsplit(mint(session, "download/link")["url"]).query)["sig"][0]
    url = f"/api/sessions/{session.session_id}/artifacts/{session.files[0].attachment_id}?sig={sig}"
    assert APIClient().get(url).json() == NOT_FOUND


@pytest.mark.parametrize("path", ["download/link", "artifacts/{aid}/link"])
def test_expired_and_tampered_links_are_404(session, monkeypatch, path):
    link = mint(session, path.format(aid=session.files[0].attachment_id), expires_in=60)
    assert link["expires_in"] == 60
    url = relative(link["url"])
    tampered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    assert APIClient().get(tampered).json() == NOT_FOUND
    assert APIClient().get(url).status_code == 200
    later(monkeypatch, 61)
    response = APIClient().get(url)
    assert (response.status_code, response.json()) == (404, NOT_FOUND)


def test_expires_in_is_capped_by_the_setting(session, settings):
    settings.ATTACHMENTS_SIGNED_LINK_MAX_AGE = 120
    assert mint(session, "download/link", expires_in=999999)["expires_in"] == 120
    assert mint(session, "download/link")["expires_in"] == 120


@pytest.mark.parametrize("value", ["0", "-5", "soon", "1.5"])
def test_a_bad_expires_in_is_400(session, value):
    response = APIClient().get(
        f"/api/sessions/{session.session_id}/download/link?expires_in={value}",
        **bearer(session.token),
    )
    assert assert_error(response, 400, "invalid_parameter")["parameter"] == "expires_in"


def test_minting_needs_a_credential(session):
    aid = session.files[0].attachment_id
    for path in (f"artifacts/{aid}/link", "download/link"):
        response = APIClient().get(f"/api/sessions/{session.session_id}/{path}")
        assert (response.status_code, response.json()) == (404, NOT_FOUND)


def test_a_link_to_an_unknown_artifact_is_not_minted(session):
    response = APIClient().get(
        f"/api/sessions/{session.session_id}/artifacts/att_doesnotexist0000/link",
        **bearer(session.token),
    )
    assert_error(response, 404, "artifact_not_found")


def test_a_purged_session_closes_its_links(session):
    from attachments.sessions import purge_session

    link = mint(session, "download/link")
    purge_session(session)
    assert APIClient().get(relative(link["url"])).json() == NOT_FOUND
