"""
Fetching one artifact (DESIGN.md 4, "Fetching one artifact"), through Django's
test client and through the project's ASGI application.
"""

from __future__ import annotations

import base64
import hashlib
import os
from urllib.parse import unquote

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from attachments.body_streams import CHUNK_BYTES

from .builders import PNG_1x1, asgi_get, assert_error, attach, new_session, response_body

pytestmark = pytest.mark.django_db

CONTENT = bytes(range(256)) * 40  # 10240 bytes, every byte value
body = response_body
error = assert_error


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def session():
    return new_session()


@pytest.fixture
def item(session):
    return attach(session, "data.bin", CONTENT)


def artifact_url(session, artifact_id: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"/api/sessions/{session.session_id}/artifacts/{artifact_id}" + (
        f"?{query}" if query else ""
    )


def stream(api, session, artifact_id: str, *, method: str = "get", params=None, **headers):
    url = artifact_url(session, artifact_id, mode="stream", **(params or {}))
    return getattr(api, method)(url, headers=headers)


class TestMeta:
    def test_is_the_default_mode(self, api, session, item):
        response = api.get(artifact_url(session, item.attachment_id))
        assert response.status_code == 200
        meta = response.json()
        assert meta["artifact_id"] == meta["attachment_id"] == item.attachment_id
        assert meta["session_id"] == session.session_id
        assert (meta["name"], meta["size"], meta["mime"]) == ("data.bin", 10240, item.mime)
        assert meta["sha256"] == hashlib.sha256(CONTENT).hexdigest()
        assert meta["hash"] == "sha256:" + meta["sha256"]
        assert meta["path"] == item.path
        assert meta["source"] == "user_upload"

    def test_small_files_carry_a_data_uri(self, api, session):
        png = attach(session, "dot.png", PNG_1x1)
        meta = api.get(artifact_url(session, png.attachment_id, mode="meta")).json()
        assert meta["data_uri"] == "data:image/png;base64," + base64.b64encode(PNG_1x1).decode()

    def test_files_over_the_limit_do_not(self, api, session, item):
        with override_settings(ATTACHMENTS_INLINE_DATA_URI_MAX_BYTES=len(CONTENT) - 1):
            assert api.get(artifact_url(session, item.attachment_id)).json()["data_uri"] is None
        with override_settings(ATTACHMENTS_INLINE_DATA_URI_MAX_BYTES=len(CONTENT)):
            assert api.get(artifact_url(session, item.attachment_id)).json()["data_uri"]

    def test_zero_disables_data_uris(self, api, session):
        png = attach(session, "dot.png", PNG_1x1)
        with override_settings(ATTACHMENTS_INLINE_DATA_URI_MAX_BYTES=0):
            assert api.get(artifact_url(session, png.attachment_id)).json()["data_uri"] is None

    def test_head(self, api, session, item):
        response = api.head(artifact_url(session, item.attachment_id))
        assert response.status_code == 200
        assert response.content == b""


class TestNotFound:
    def test_unknown_id(self, api, session):
        error(api.get(artifact_url(session, "att_AAAAAAAAAAAAAAAA")), 404, "artifact_not_found")

    @pytest.mark.parametrize(
        "artifact_id", ["not-an-id", "..", "att_%24%24%24%24%24%24%24%24%24%24%24%24"]
    )
    def test_malformed_id(self, api, session, artifact_id):
        error(api.get(artifact_url(session, artifact_id)), 404, "artifact_not_found")

    def test_another_sessions_attachment(self, api, session):
        theirs = attach(new_session(), "theirs.txt", b"private")
        response = stream(api, session, theirs.attachment_id)
        error(response, 404, "artifact_not_found")

    def test_unknown_art_ids(self, api, session):
        for mode in ("meta", "stream"):
            response = api.get(artifact_url(session, "art_AAAAAAAAAAAAAAAA", mode=mode))
            error(response, 404, "artifact_not_found")

    @pytest.mark.parametrize("mode", ["meta", "stream"])
    def test_a_record_whose_file_is_gone(self, api, session, item, mode):
        (session.directory / item.path).unlink()
        payload = error(
            api.get(artifact_url(session, item.attachment_id, mode=mode)),
            404,
            "artifact_file_missing",
        )
        assert "no longer" in payload["detail"]

    def test_unknown_session(self, api):
        response = api.get("/api/sessions/nosuchsession/artifacts/att_AAAAAAAAAAAAAAAA")
        error(response, 404, "session_not_found")

    def test_invalid_session_id(self, api):
        response = api.get("/api/sessions/bad.id/artifacts/att_AAAAAAAAAAAAAAAA")
        error(response, 400, "invalid_session_id")


class TestParameters:
    @pytest.mark.parametrize(
        ("params", "parameter"),
        [({"mode": "raw"}, "mode"), ({"mode": "stream", "download": "perhaps"}, "download")],
    )
    def test_bad_values_are_named(self, api, session, item, params, parameter):
        payload = error(
            api.get(artifact_url(session, item.attachment_id, **params)), 400, "invalid_parameter"
        )
        assert payload["parameter"] == parameter

    def test_an_accept_header_never_causes_a_406(self, api, session, item):
        response = stream(api, session, item.attachment_id, Accept="application/x-anything")
        assert response.status_code == 200
        assert body(response) == CONTENT


class TestStream:
    def test_whole_file(self, api, session, item):
        response = stream(api, session, item.attachment_id)
        assert response.status_code == 200
        assert body(response) == CONTENT
        digest = hashlib.sha256(CONTENT)
        assert response["Content-Length"] == str(len(CONTENT))
        assert response["Content-Type"] == item.mime
        assert response["ETag"] == f'"{digest.hexdigest()}"'
        assert response["Repr-Digest"] == f"sha-256=:{base64.b64encode(digest.digest()).decode()}:"
        assert response["Accept-Ranges"] == "bytes"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Last-Modified"]
        assert response["Content-Disposition"].startswith('inline; filename="data.bin"')

    def test_download_true_is_an_attachment(self, api, session, item):
        response = stream(
            api, session, item.attachment_id, method="head", params={"download": "true"}
        )
        assert response["Content-Disposition"].startswith("attachment; ")

    def test_a_file_larger_than_one_chunk(self, api, session):
        data = os.urandom(3 * CHUNK_BYTES + 17)
        big = attach(session, "big.bin", data)
        response = stream(api, session, big.attachment_id)
        assert body(response) == data

    @pytest.mark.parametrize(
        ("header", "start", "end"),
        [
            ("bytes=0-0", 0, 0),
            ("bytes=0-99", 0, 99),
            ("bytes=100-199", 100, 199),
            ("bytes=10000-", 10000, 10239),
            ("bytes=-240", 10000, 10239),
            ("bytes=-1", 10239, 10239),
            ("bytes=-99999", 0, 10239),
            ("bytes=10200-99999", 10200, 10239),
            ("bytes=10239-10239", 10239, 10239),
        ],
    )
    def test_every_range_form_gives_exact_bytes(self, api, session, item, header, start, end):
        response = stream(api, session, item.attachment_id, Range=header)
        assert response.status_code == 206
        assert body(response) == CONTENT[start : end + 1]
        assert response["Content-Range"] == f"bytes {start}-{end}/{len(CONTENT)}"
        assert response["Content-Length"] == str(end - start + 1)
        assert response["ETag"]
        assert response["Repr-Digest"].startswith("sha-256=:")

    @pytest.mark.parametrize("header", ["bytes=10240-", "bytes=20000-30000", "bytes=-0"])
    def test_unsatisfiable_ranges_are_416(self, api, session, item, header):
        response = stream(api, session, item.attachment_id, Range=header)
        error(response, 416, "range_not_satisfiable")
        assert response["Content-Range"] == f"bytes */{len(CONTENT)}"

    @pytest.mark.parametrize("header", ["bytes=0-1,5-6", "pages=1-2", "bytes=9-1", "garbage"])
    def test_ranges_not_served_give_the_whole_file(self, api, session, item, header):
        response = stream(api, session, item.attachment_id, Range=header)
        assert response.status_code == 200
        assert body(response) == CONTENT

    def test_if_none_match_gives_304(self, api, session, item):
        etag = stream(api, session, item.attachment_id, method="head")["ETag"]
        for candidate in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            response = stream(api, session, item.attachment_id, If_None_Match=candidate)
            assert response.status_code == 304, candidate
            assert body(response) == b""
            assert response["ETag"] == etag
            # RFC 9110 8.6: the 200's own length, or none; never 0.
            assert "Content-Length" not in response and "Content-Type" not in response
        changed = stream(api, session, item.attachment_id, If_None_Match='"other"')
        assert changed.status_code == 200
        assert body(changed) == CONTENT

    def test_if_modified_since_gives_304(self, api, session, item):
        last_modified = stream(api, session, item.attachment_id, method="head")["Last-Modified"]
        response = stream(api, session, item.attachment_id, If_Modified_Since=last_modified)
        assert response.status_code == 304
        assert "Content-Length" not in response

    def test_if_match_failing_gives_412(self, api, session, item):
        response = stream(api, session, item.attachment_id, If_Match='"other"')
        error(response, 412, "precondition_failed")

    def test_if_range_with_the_current_etag_honours_the_range(self, api, session, item):
        etag = stream(api, session, item.attachment_id, method="head")["ETag"]
        response = stream(api, session, item.attachment_id, Range="bytes=5-9", If_Range=etag)
        assert response.status_code == 206
        assert body(response) == CONTENT[5:10]

    @pytest.mark.parametrize(
        "validator", ['"stale"', 'W/"{etag}"', "Mon, 01 Jan 2001 00:00:00 GMT"]
    )
    def test_if_range_with_another_validator_gives_the_whole_file(
        self, api, session, item, validator
    ):
        etag = stream(api, session, item.attachment_id, method="head")["ETag"]
        response = stream(
            api,
            session,
            item.attachment_id,
            Range="bytes=5-9",
            If_Range=validator.replace('"{etag}"', etag),
        )
        assert response.status_code == 200
        assert body(response) == CONTENT

    def test_if_range_with_the_last_modified_date(self, api, session, item):
        last_modified = stream(api, session, item.attachment_id, method="head")["Last-Modified"]
        response = stream(
            api, session, item.attachment_id, Range="bytes=5-9", If_Range=last_modified
        )
        assert response.status_code == 206
        assert body(response) == CONTENT[5:10]

    def test_head_has_the_headers_and_no_body(self, api, session, item):
        response = stream(api, session, item.attachment_id, method="head", Range="bytes=0-1")
        assert response.status_code == 200
        assert response["Content-Length"] == str(len(CONTENT))
        assert response["ETag"]
        assert body(response) == b""

    def test_a_file_changed_on_disk_loses_its_digest_but_is_served(self, api, session, item):
        (session.directory / item.path).write_bytes(b"rewritten")
        response = stream(api, session, item.attachment_id)
        assert body(response) == b"rewritten"
        assert response["Content-Length"] == "9"
        assert "ETag" not in response and "Repr-Digest" not in response

    def test_empty_file(self, api, session):
        empty = attach(session, "empty.txt", b"")
        response = stream(api, session, empty.attachment_id)
        assert response.status_code == 200
        assert response["Content-Length"] == "0"
        assert body(response) == b""


class TestHostileNames:
    @pytest.mark.parametrize(
        "name",
        [
            'quote".txt',
            "crlf\r\nSet-Cookie: stolen=1.txt",
            "semi; filename=evil.exe",
            "日本語 ファイル.txt",
            "\u202eexe.txt",
        ],
    )
    def test_content_disposition_cannot_be_broken(self, api, session, name):
        hostile = attach(session, name, b"x")
        response = stream(
            api, session, hostile.attachment_id, method="head", params={"download": "true"}
        )
        disposition = response["Content-Disposition"]
        assert disposition.isascii() and disposition.isprintable()
        assert "Set-Cookie" not in response
        assert not response.cookies
        star = disposition.split("filename*=UTF-8''", 1)[1]
        assert unquote(star) == hostile.name


class TestActiveContent:
    SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>'
    HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"

    @pytest.mark.parametrize(
        ("name", "content", "mime"),
        [
            ("pic.svg", SVG, "image/svg+xml"),
            ("page.html", HTML, "text/html"),
            ("renamed.txt", HTML, "text/html"),
        ],
    )
    def test_never_inline_and_sandboxed(self, api, session, name, content, mime):
        page = attach(session, name, content)
        assert page.mime == mime
        response = stream(api, session, page.attachment_id, params={"download": "false"})
        assert response.status_code == 200
        assert response["Content-Disposition"].startswith("attachment; ")
        assert response["Content-Security-Policy"].startswith("sandbox")
        assert response["X-Content-Type-Options"] == "nosniff"
        assert body(response) == content

    def test_passive_content_stays_inline(self, api, session):
        png = attach(session, "dot.png", PNG_1x1)
        response = stream(api, session, png.attachment_id, method="head")
        assert response["Content-Disposition"].startswith("inline; ")
        assert "Content-Security-Policy" not in response


class TestSymlinks:
    @pytest.fixture
    def planted(self, session, item, tmp_path):
        """The attachment's file replaced by a link to a file outside the session."""
        secret = tmp_path / "secret.txt"
        secret.write_bytes(b"server secret")
        path = session.directory / item.path
        path.unlink()
        path.symlink_to(secret)
        return item

    def test_not_streamed(self, api, session, planted):
        response = stream(api, session, planted.attachment_id)
        payload = error(response, 404, "artifact_file_missing")
        assert "outside" in payload["detail"]

    def test_not_described_either(self, api, session, planted):
        response = api.get(artifact_url(session, planted.attachment_id))
        error(response, 404, "artifact_file_missing")


class TestSendfile:
    @override_settings(
        ATTACHMENTS_SENDFILE_HEADER="X-Accel-Redirect", ATTACHMENTS_SENDFILE_ROOT="/_warehouse/"
    )
    def test_x_accel_redirect_after_the_checks(self, api, session, item):
        response = stream(api, session, item.attachment_id)
        assert response.status_code == 200
        assert body(response) == b""
        assert (
            response["X-Accel-Redirect"] == f"/_warehouse/session_{session.session_id}/{item.path}"
        )
        assert response["Content-Disposition"].startswith("inline; ")
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["ETag"]

    @override_settings(ATTACHMENTS_SENDFILE_HEADER="X-Sendfile")
    def test_x_sendfile_gives_the_real_path(self, api, session, item):
        response = stream(api, session, item.attachment_id)
        assert response["X-Sendfile"] == os.path.realpath(session.directory / item.path)

    @override_settings(ATTACHMENTS_SENDFILE_HEADER="X-Sendfile")
    def test_conditional_requests_are_still_answered_here(self, api, session, item):
        etag = stream(api, session, item.attachment_id, method="head")["ETag"]
        response = stream(api, session, item.attachment_id, If_None_Match=etag)
        assert response.status_code == 304
        assert "X-Sendfile" not in response

    @override_settings(ATTACHMENTS_SENDFILE_HEADER="X-Sendfile")
    def test_foreign_ids_never_reach_the_proxy(self, api, session):
        theirs = attach(new_session(), "theirs.txt", b"private")
        response = stream(api, session, theirs.attachment_id)
        assert response.status_code == 404
        assert "X-Sendfile" not in response


@pytest.mark.django_db(transaction=True)
def test_under_asgi_the_body_is_streamed_in_chunks(session):
    data = os.urandom(2 * CHUNK_BYTES + 3)
    big = attach(session, "big.bin", data)
    url = artifact_url(session, big.attachment_id, mode="stream")
    assert asgi_get(url).content == data
    ranged = asgi_get(url, range=f"bytes={CHUNK_BYTES - 1}-{CHUNK_BYTES + 1}")
    assert ranged.status_code == 206
    assert ranged.content == data[CHUNK_BYTES - 1 : CHUNK_BYTES + 2]


class TestContent:
    """`.../content`: the bytes as an operation of its own, for generated clients."""

    def test_is_the_stream_with_the_same_headers(self, api, session, item):
        url = f"/api/sessions/{session.session_id}/artifacts/{item.attachment_id}/content"
        content = api.get(url)
        streamed = stream(api, session, item.attachment_id)
        assert body(content) == body(streamed) == CONTENT
        for name in ("Content-Type", "Content-Length", "ETag", "Content-Disposition"):
            assert content[name] == streamed[name]
        ranged = api.get(url, headers={"Range": "bytes=0-9"})
        assert (ranged.status_code, body(ranged)) == (206, CONTENT[:10])
        assert api.get(url + "?download=true")["Content-Disposition"].startswith("attachment")
        assert api.get(url, headers={"If-None-Match": content["ETag"]}).status_code == 304

    def test_errors_are_those_of_the_artifact(self, api, session):
        url = f"/api/sessions/{session.session_id}/artifacts/att_AAAAAAAAAAAAAAAA/content"
        error(api.get(url), 404, "artifact_not_found")
