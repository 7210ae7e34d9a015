"""Small builders shared by the attachments tests."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import subprocess
import sys
import uuid
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from rest_framework.test import APIClient

from attachments import holders, manifest, resumable
from attachments.models import Attachment, Session
from attachments.sessions import create_session

PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def multipart(
    parts: list[tuple[str, str | None, bytes]], boundary: str | None = None
) -> tuple[bytes, str]:
    """A multipart/form-data body from (field, filename or None, content) parts."""
    boundary = boundary or uuid.uuid4().hex
    chunks = []
    for field, filename, content in parts:
        disposition = f'form-data; name="{field}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if filename is not None:
            head += "Content-Type: application/octet-stream\r\n"
        chunks.append(head.encode("utf-8") + b"\r\n" + content + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


@dataclass
class Reply:
    status: int
    body: Any


class DjangoPath:
    """Uploads read by the Django view (test client, WSGI, plain ASGI)."""

    name = "django"

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self.extra = {
            "HTTP_" + name.upper().replace("-", "_"): value
            for name, value in (headers or {}).items()
        }

    def post(self, url: str, body: bytes, content_type: str) -> Reply:
        response = APIClient().generic("POST", url, body, content_type=content_type, **self.extra)
        return Reply(response.status_code, json.loads(response.content or b"null"))

    def get(self, url: str) -> Reply:
        response = APIClient().get(url, **self.extra)
        return Reply(response.status_code, json.loads(response.content or b"null"))


class StreamingPath:
    """Uploads streamed by StreamingUploadMiddleware in front of the project's ASGI app."""

    name = "streaming"
    chunk = 7919  # a prime, so part boundaries fall at awkward places

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self.headers = dict(headers or {})

    def _request(self, method: str, url: str, body: bytes = b"", content_type: str = "") -> Reply:
        from macproject.asgi import application

        async def stream():
            for start in range(0, len(body), self.chunk):
                yield body[start : start + self.chunk]

        async def run() -> httpx.Response:
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver"
            ) as client:
                headers = dict(self.headers)
                if content_type:
                    headers["content-type"] = content_type
                if body:
                    headers["content-length"] = str(len(body))
                return await client.request(
                    method, url, content=stream() if body else None, headers=headers
                )

        response = asyncio.run(run())
        return Reply(response.status_code, response.json() if response.content else None)

    def post(self, url: str, body: bytes, content_type: str) -> Reply:
        return self._request("POST", url, body, content_type)

    def get(self, url: str) -> Reply:
        return self._request("GET", url)


def new_session(session_id: str | None = None, owner: Any = None) -> Session:
    """A session as `create_session` makes it; its `token` is on the returned instance."""
    return create_session(session_id, owner=owner)


def record_directory_syncs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The directories fsync'd from now on, in order (each still fsync'd)."""
    synced: list[Path] = []
    real = manifest.sync_directory

    def sync_directory(directory: Path) -> None:
        synced.append(directory)
        real(directory)

    for module in (manifest, resumable):
        monkeypatch.setattr(module, "sync_directory", sync_directory)
    return synced


def files_on_disk(session: Session) -> list[Path]:
    root = session.directory / "code_workspace" / "attachments"
    return (
        sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        if root.exists()
        else []
    )


def uploaded_files(session: Session) -> list[Path]:
    return [p for p in files_on_disk(session) if p.name != "attachments_manifest.json"]


def manifest_ids(session: Session) -> list[str]:
    path = session.directory / "code_workspace/attachments/attachments_manifest.json"
    if not path.exists():
        return []
    return [a["attachment_id"] for a in json.loads(path.read_text())["attachments"]]


def row_ids(session: Session) -> list[str]:
    return list(Attachment.objects.filter(session=session).values_list("attachment_id", flat=True))


def attach(session: Session, name: str, content: bytes) -> Attachment:
    """Record `content` as an upload named `name` in the session, as the upload view would."""
    from attachments.receiving import UploadSink
    from attachments.uploads import accept_upload

    sink = UploadSink(session.directory / "code_workspace" / "attachments", name)
    sink.write(content)
    return accept_upload(session, sink.finish())


def response_body(response) -> bytes:
    """The whole body of a test client response, streamed or not."""
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


def assert_error(response, status: int, code: str) -> dict:
    """Assert a JSON error with this status and code; return its payload."""
    assert response.status_code == status, response_body(response)
    payload = response.json()
    assert payload["code"] == code
    assert payload["detail"]
    return payload


def directory_hashes(root: Path) -> dict[str, str]:
    """sha256 of each regular file under `root` (links not followed, the manifest lock left out)."""
    return {
        path.relative_to(root).as_posix(): sha256(path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink() and path.name != ".attachments_manifest.lock"
    }


def zip_hashes(data: bytes) -> dict[str, str]:
    """sha256 of each member of the zip `data`, after checking every member's CRC."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        return {info.filename: sha256(zf.read(info)) for info in zf.infolist()}


def asgi_get(url: str, **headers: str) -> httpx.Response:
    """GET through the project's ASGI application, failing on any warning (e.g. Django
    reading a sync streaming iterator whole under ASGI)."""
    from macproject.asgi import application

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get(url, headers=headers)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return asyncio.run(run())


JWT_SECRET = "test-jwt-secret-of-at-least-32-bytes-long"


def bearer(token: str) -> dict[str, str]:
    """Test-client keyword arguments that send `token` as `Authorization: Bearer`."""
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def make_jwt(secret: str = JWT_SECRET, expires_in: float = 300, **claims: Any) -> str:
    """An internal JWT as a portal would mint it (HS256, `exp` from now unless given)."""
    import time

    import jwt

    claims.setdefault("exp", int(time.time() + expires_in))
    if claims["exp"] is None:
        del claims["exp"]
    return jwt.encode(claims, secret, algorithm="HS256")


# A child process that prints its name as a lease holder (attachments.holders).
NAME_ITSELF = "from attachments import holders; print(holders.this_process(), flush=True)"


def name_of_a_dead_process() -> str:
    """The holder name of a process that ran, and has exited and been reaped."""
    if not holders.this_process():
        pytest.skip("needs /proc to name processes (Linux)")
    return subprocess.run(
        [sys.executable, "-c", NAME_ITSELF], capture_output=True, text=True, check=True
    ).stdout.strip()
