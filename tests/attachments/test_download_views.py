"""
Downloading the session zip (DESIGN.md 4, "Session zip"), through Django's
test client and through the project's ASGI application.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from rest_framework.test import APIClient

from attachments import archive

from .builders import (
    PNG_1x1,
    asgi_get,
    assert_error,
    attach,
    directory_hashes,
    new_session,
    response_body,
    zip_hashes,
)

pytestmark = pytest.mark.django_db

body = response_body
error = assert_error


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def session():
    return new_session()


def download(api, session, query: str = "", **headers):
    return api.get(f"/api/sessions/{session.session_id}/download{query}", headers=headers)


@pytest.fixture
def filled(session):
    attach(session, "notes.md", b"# Notes\n" * 1000)
    attach(session, "dot.png", PNG_1x1)
    workspace = session.directory / "code_workspace"
    (workspace / "result.json").write_text('{"rows": 3}')
    (workspace / "charts").mkdir()
    (workspace / "charts" / "chart.csv").write_bytes(b"x,y\n" * 5000)
    return session


class TestDownload:
    def test_the_zip_is_the_directory(self, api, filled):
        response = download(api, filled)
        assert response.status_code == 200
        assert response["Content-Type"] == "application/zip"
        assert response["Content-Disposition"] == (
            f'attachment; filename="session_{filled.session_id}.zip"; '
            f"filename*=UTF-8''session_{filled.session_id}.zip"
        )
        assert response["X-Content-Type-Options"] == "nosniff"
        assert "Content-Length" not in response
        assert response["Accept-Ranges"] == "none"
        hashes = zip_hashes(body(response))
        assert "code_workspace/attachments/attachments_manifest.json" in hashes
        assert hashes == directory_hashes(filled.directory)

    def test_compress_false_announces_its_length_and_resumes(self, api, filled):
        response = download(api, filled, "?compress=false")
        whole = body(response)
        assert response["Content-Length"] == str(len(whole))
        assert response["Accept-Ranges"] == "bytes"
        etag = response["ETag"]
        assert zip_hashes(whole) == directory_hashes(filled.directory)
        # An interrupted download resumes where it stopped.
        cut = len(whole) // 3
        resumed = download(api, filled, "?compress=false", Range=f"bytes={cut}-", If_Range=etag)
        assert resumed.status_code == 206
        assert resumed["Content-Range"] == f"bytes {cut}-{len(whole) - 1}/{len(whole)}"
        assert whole[:cut] + body(resumed) == whole

    def test_resume_after_a_change_gives_the_new_zip_whole(self, api, filled):
        first = download(api, filled, "?compress=false")
        etag = first["ETag"]
        body(first)
        (filled.directory / "code_workspace" / "result.json").write_text('{"rows": 4}')
        response = download(api, filled, "?compress=false", Range="bytes=10-", If_Range=etag)
        assert response.status_code == 200
        assert zip_hashes(body(response)) == directory_hashes(filled.directory)

    def test_a_stored_zip_range_past_the_end_is_416(self, api, filled):
        whole = body(download(api, filled, "?compress=false"))
        response = download(api, filled, "?compress=false", Range=f"bytes={len(whole)}-")
        error(response, 416, "range_not_satisfiable")
        assert response["Content-Range"] == f"bytes */{len(whole)}"

    def test_a_compressed_zip_ignores_range(self, api, filled):
        response = download(api, filled, "", Range="bytes=0-9")
        assert response.status_code == 200
        assert zip_hashes(body(response)) == directory_hashes(filled.directory)

    def test_if_none_match_on_a_stored_zip(self, api, filled):
        etag = download(api, filled, "?compress=false")["ETag"]
        not_modified = download(api, filled, "?compress=false", If_None_Match=etag)
        assert not_modified.status_code == 304
        assert "Content-Length" not in not_modified

    def test_head(self, api, filled):
        stored = api.head(f"/api/sessions/{filled.session_id}/download?compress=false")
        whole = body(download(api, filled, "?compress=false"))
        assert stored.status_code == 200
        assert stored["Content-Length"] == str(len(whole))
        assert body(stored) == b""
        compressed = api.head(f"/api/sessions/{filled.session_id}/download")
        assert compressed.status_code == 200
        assert "Content-Length" not in compressed

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("?include_ext=csv,.json", {"chart.csv", "result.json", "attachments_manifest.json"}),
            ("?include_mime=image/", {"dot.png"}),
            (
                "?include_mime=text/markdown,application/json",
                {"notes.md", "result.json", "attachments_manifest.json"},
            ),
            ("?max_size=100", {"result.json", "dot.png"}),
            ("?include_ext=md,png&max_size=100", {"dot.png"}),
            ("?include_ext=nothing", set()),
        ],
    )
    def test_filters(self, api, filled, query, expected):
        names = zipfile.ZipFile(io.BytesIO(body(download(api, filled, query)))).namelist()
        assert {name.rsplit("/", 1)[-1] for name in names} == expected

    @pytest.mark.parametrize(
        ("query", "parameter"),
        [
            ("?compress=maybe", "compress"),
            ("?max_size=-5", "max_size"),
            ("?include_mime=image", "include_mime"),
            ("?include_ext=a/b", "include_ext"),
            ("?after=abc", "after"),
            ("?after=-1", "after"),
        ],
    )
    def test_bad_parameters_are_named(self, api, filled, query, parameter):
        payload = error(download(api, filled, query), 400, "invalid_parameter")
        assert payload["parameter"] == parameter

    def test_after_needs_the_event_feed(self, api, filled, monkeypatch):
        # As in a host project that installs attachments without artifacts.
        monkeypatch.setattr(archive, "_change_feed", None)
        payload = error(download(api, filled, "?after=0"), 400, "invalid_parameter")
        assert payload["parameter"] == "after"
        assert "event feed" in payload["detail"]

    def test_after_uses_a_registered_change_feed(self, api, filled, monkeypatch):
        seen = []

        def feed(session, cursor):
            seen.append((session.session_id, cursor))
            return {"code_workspace/result.json"}

        monkeypatch.setattr(archive, "_change_feed", feed)
        names = zipfile.ZipFile(io.BytesIO(body(download(api, filled, "?after=12")))).namelist()
        assert names == ["code_workspace/result.json"]
        assert seen == [(filled.session_id, 12)]

    def test_unknown_session(self, api):
        error(api.get("/api/sessions/nosuchsession/download"), 404, "session_not_found")

    def test_invalid_session_id(self, api):
        error(api.get("/api/sessions/bad.id/download"), 400, "invalid_session_id")

    def test_links_leading_outside_are_not_zipped(self, api, filled, tmp_path):
        secret = tmp_path / "secret.txt"
        secret.write_bytes(b"server secret")
        item = attach(filled, "planted.txt", b"replaced below")
        (filled.directory / item.path).unlink()
        (filled.directory / item.path).symlink_to(secret)
        (filled.directory / "code_workspace" / "link.txt").symlink_to(secret)
        for compress in ("true", "false"):
            data = body(download(api, filled, f"?compress={compress}"))
            assert b"server secret" not in data
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
            assert item.path not in names
            assert "code_workspace/link.txt" not in names
            assert zip_hashes(data) == directory_hashes(filled.directory)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("query", ["", "?compress=false"])
def test_under_asgi_the_zip_is_streamed(filled, query):
    response = asgi_get(f"/api/sessions/{filled.session_id}/download{query}")
    assert response.status_code == 200
    assert zip_hashes(response.content) == directory_hashes(filled.directory)
