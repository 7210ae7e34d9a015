"""
A Python client generated from the served OpenAPI schema (openapi-python-client)
used against a real server: sessions, upload, list, metadata, bytes and the zip.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.attachments.builders import PNG_1x1

pytestmark = [
    pytest.mark.server,
    pytest.mark.django_db(transaction=True),
    pytest.mark.access_policy("token"),
]

PACKAGE = "mac_generated_client"
# openapi-python-client reads only JSON, octet-stream and text bodies; these
# map the schema's binary bodies (the bytes, the zip, tus PATCH bodies) onto bytes.
CONFIG = """\
post_hooks: []
content_type_overrides:
  "*/*": application/octet-stream
  application/zip: application/octet-stream
  application/offset+octet-stream: application/octet-stream
"""


def generate(server_url: str, directory: Path) -> Path:
    schema = httpx.get(server_url + "/api/schema/", params={"format": "json"})
    assert schema.status_code == 200
    (directory / "schema.json").write_bytes(schema.content)
    (directory / "config.yaml").write_text(CONFIG)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(directory / "schema.json"),
            "--config",
            str(directory / "config.yaml"),
            "--output-path",
            str(directory / PACKAGE),
            "--meta",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Every operation was understood: nothing skipped with a warning.
    assert "Warning" not in output, output
    return directory


@pytest.fixture
def generated(server, tmp_path):
    with server("uvicorn") as live:
        sys.path.insert(0, str(generate(live.url, tmp_path)))
        try:
            yield live, importlib.import_module(PACKAGE)
        finally:
            sys.path.remove(str(tmp_path))
            for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
                del sys.modules[name]


def test_the_generated_client_walks_the_whole_attachment_flow(generated):
    live, package = generated
    models = importlib.import_module(f"{PACKAGE}.models")
    types = importlib.import_module(f"{PACKAGE}.types")
    sessions_create = importlib.import_module(f"{PACKAGE}.api.sessions.sessions_create")

    anonymous = package.Client(base_url=live.url)
    session = sessions_create.sync(client=anonymous, body=models.SessionCreateRequest())
    assert isinstance(session, models.CreatedSession), session
    client = package.AuthenticatedClient(base_url=live.url, token=session.token)
    sid = session.session_id
    show = importlib.import_module(f"{PACKAGE}.api.sessions.sessions_retrieve")
    assert show.sync(sid, client=client).last_event_cursor == 0

    upload = importlib.import_module(f"{PACKAGE}.api.uploads.uploads_create")
    body = models.UploadRequest(
        file=types.File(payload=io.BytesIO(PNG_1x1), file_name="dot.png", mime_type="image/png")
    )
    attachment = upload.sync(sid, client=client, body=body)
    assert isinstance(attachment, models.Attachment), attachment
    assert (attachment.name, attachment.mime) == ("dot.png", "image/png")

    listing = importlib.import_module(f"{PACKAGE}.api.uploads.uploads_retrieve").sync(
        sid, client=client
    )
    assert [a.attachment_id for a in listing.attachments] == [attachment.attachment_id]

    retrieve = importlib.import_module(f"{PACKAGE}.api.sessions.sessions_artifacts_retrieve")
    meta = retrieve.sync(sid, attachment.attachment_id, client=client)
    assert isinstance(meta, models.ArtifactMeta), meta
    assert meta.sha256 == hashlib.sha256(PNG_1x1).hexdigest()
    assert meta.data_uri.startswith("data:image/png;base64,")

    events = importlib.import_module(f"{PACKAGE}.api.artifact_events.artifact_events_page")
    page = events.sync(sid, client=client, after=0)
    event = page.events[0]
    assert (event.file_name, event.mime_type, event.sha256) == ("dot.png", "image/png", meta.sha256)
    by_event = retrieve.sync(sid, event.artifact_id, client=client)
    assert (by_event.change_type.value, by_event.sequence) == ("created", 1)

    content = importlib.import_module(f"{PACKAGE}.api.sessions.sessions_artifacts_content")
    file = content.sync(sid, attachment.attachment_id, client=client)
    assert isinstance(file, types.File), file
    assert file.payload.read() == PNG_1x1

    download = importlib.import_module(f"{PACKAGE}.api.sessions.sessions_download_retrieve")
    archive = download.sync(sid, client=client)
    assert isinstance(archive, types.File), archive
    with zipfile.ZipFile(archive.payload) as zipped:
        assert zipped.read(attachment.path) == PNG_1x1

    # Errors are typed too: another session's token reaches nothing.
    stranger = package.AuthenticatedClient(base_url=live.url, token="x" * 43)
    refused = retrieve.sync(sid, attachment.attachment_id, client=stranger)
    assert isinstance(refused, models.Error) and refused.code == "session_not_found"
