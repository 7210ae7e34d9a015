"""What only the streaming path does: route matching, disconnects, and not spooling."""

from __future__ import annotations

import asyncio
import json

import pytest
from django.urls import reverse

from attachments.uploads_asgi import StreamingUploadMiddleware, upload_session_id
from tests.scopes import http_scope

from .builders import manifest_ids, multipart, new_session, row_ids, uploaded_files

pytestmark = pytest.mark.django_db(transaction=True)


def upload_scope(path: str, body_length: int, content_type: str, method: str = "POST") -> dict:
    headers = [
        (b"host", b"testserver"),
        (b"content-type", content_type.encode()),
        (b"content-length", str(body_length).encode()),
    ]
    return http_scope(path, method, headers=headers)


class TestRouteMatching:
    def test_matches_upload_posts(self):
        path = reverse("attachments:uploads", kwargs={"session_id": "abc"})
        assert upload_session_id(upload_scope(path, 0, "x")) == "abc"

    def test_ignores_listing(self):
        path = reverse("attachments:uploads", kwargs={"session_id": "abc"})
        assert upload_session_id(upload_scope(path, 0, "x", method="GET")) is None

    @pytest.mark.parametrize("path", ["/api/sessions", "/api/uploads/a/b", "/nowhere"])
    def test_ignores_other_routes(self, path):
        assert upload_session_id(upload_scope(path, 0, "x")) is None


async def run_app(app, scope, messages):
    """Drive an ASGI app with the given receive messages; return what it sent."""
    queue: asyncio.Queue = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)
    sent = []

    async def receive():
        return await queue.get()

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)
    return sent


def test_a_client_that_disconnects_mid_upload_leaves_nothing():
    session = new_session()
    body, content_type = multipart([("file", "big.bin", b"x" * 300_000)])
    scope = upload_scope(f"/api/uploads/{session.session_id}", len(body), content_type)
    messages = [
        {"type": "http.request", "body": body[:100_000], "more_body": True},
        {"type": "http.request", "body": body[100_000:200_000], "more_body": True},
        {"type": "http.disconnect"},
    ]
    reached_django = []

    async def django_app(scope, receive, send):
        reached_django.append(scope)

    sent = asyncio.run(run_app(StreamingUploadMiddleware(django_app), scope, messages))
    assert sent == [] and reached_django == []
    assert uploaded_files(session) == []
    attachments = session.directory / "code_workspace/attachments"
    assert [p for p in attachments.rglob("*") if not p.is_dir()] == []
    assert manifest_ids(session) == [] and row_ids(session) == []


def test_django_sees_an_empty_body_and_the_streamed_file():
    from macproject.asgi import application

    session = new_session()
    content = b"y" * 50_000
    body, content_type = multipart([("file", "y.txt", content)])
    scope = upload_scope(f"/api/uploads/{session.session_id}", len(body), content_type)
    messages = [
        {"type": "http.request", "body": body[i : i + 4096], "more_body": i + 4096 < len(body)}
        for i in range(0, len(body), 4096)
    ]
    sent = asyncio.run(run_app(application, scope, messages))
    assert sent[0]["status"] == 201
    reply = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert (session.directory / reply["path"]).read_bytes() == content


# What Django's chain adds to an upload's answer that the fast path leaves
# out: DRF's `Allow` and the session middleware's `Vary: Cookie`, which say
# nothing about a POST's 201 (it is never cached).
DJANGO_CHAIN_ONLY = {b"allow"}


def _comparable(headers: dict[bytes, bytes]) -> dict[bytes, bytes]:
    headers = {name: value for name, value in headers.items() if name not in DJANGO_CHAIN_ONLY}
    if b"vary" in headers:
        vary = [v.strip() for v in headers[b"vary"].split(b",") if v.strip() != b"Cookie"]
        headers[b"vary"] = b", ".join(vary)
    return headers


def upload_through(app, session, content: bytes, content_type: str | None = None):
    """(status, headers, JSON body) of an upload of `content` sent through `app`."""
    body, multipart_type = multipart([("file", "h.txt", content)])
    scope = upload_scope(
        f"/api/uploads/{session.session_id}", len(body), content_type or multipart_type
    )
    scope["headers"].append((b"origin", b"http://elsewhere.example"))
    sent = asyncio.run(run_app(app, scope, [{"type": "http.request", "body": body}]))
    headers = {name.lower(): value for name, value in sent[0]["headers"]}
    assert int(headers[b"content-length"]) == len(sent[1]["body"])
    return sent[0]["status"], headers, json.loads(sent[1]["body"])


@pytest.mark.parametrize("cors", [False, True])
def test_an_upload_answered_on_the_fast_path_gets_the_headers_of_djangos_chain(cors):
    """UploadRequestHandler records a whole body and answers it with the header policy."""
    from django.core.asgi import get_asgi_application
    from django.test import override_settings

    from attachments.uploads_asgi import UploadRequestHandler

    session = new_session()
    allowed = ["http://elsewhere.example"] if cors else []
    with override_settings(CORS_ALLOWED_ORIGINS=allowed):
        django_app = get_asgi_application()
        status, django_chain, first = upload_through(
            StreamingUploadMiddleware(django_app), session, b"headers"
        )
        fast_status, fast, second = upload_through(
            StreamingUploadMiddleware(django_app, upload_app=UploadRequestHandler()),
            session,
            b"headers",
        )
    assert status == fast_status == 201
    django_chain.pop(b"content-length"), fast.pop(b"content-length")
    assert fast == _comparable(django_chain)
    assert b"x-frame-options" in fast and b"x-content-type-options" in fast
    assert (b"access-control-allow-origin" in fast) is cors
    assert first.keys() == second.keys() and second["name"] == "h.txt"
    assert manifest_ids(session) == row_ids(session)
    assert set(row_ids(session)) == {first["attachment_id"], second["attachment_id"]}


def test_an_upload_refused_on_the_upload_threads_is_answered_by_djangos_chain():
    """Errors keep the one renderer: the view raises them, DRF answers in the JSON shape."""
    from django.core.asgi import get_asgi_application

    from attachments.uploads_asgi import UploadRequestHandler

    session = new_session()
    django_app = get_asgi_application()
    answers = [
        upload_through(app, session, b"x", content_type="text/plain")
        for app in (
            StreamingUploadMiddleware(django_app),
            StreamingUploadMiddleware(django_app, upload_app=UploadRequestHandler()),
        )
    ]
    assert answers[0] == answers[1]
    status, headers, body = answers[1]
    assert status == 415 and body["code"] == "unsupported_media_type"
    assert b"x-frame-options" in headers
    assert row_ids(session) == []


def test_an_upload_answered_on_an_upload_thread_sends_the_request_signals_on_that_thread():
    """
    request_started and request_finished run close_old_connections: sent on
    the thread that recorded the upload, once each, they give that thread's
    database connection back when the request ends.
    """
    import threading

    from django.core import signals
    from django.core.asgi import get_asgi_application

    from attachments.signals import attachments_recorded
    from attachments.uploads_asgi import UploadRequestHandler

    session = new_session()
    seen: list[tuple[str, int]] = []

    def started(**kwargs):
        seen.append(("started", threading.get_ident()))

    def finished(**kwargs):
        seen.append(("finished", threading.get_ident()))

    def recorded(**kwargs):
        seen.append(("recorded", threading.get_ident()))

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    attachments_recorded.connect(recorded)
    try:
        app = StreamingUploadMiddleware(get_asgi_application(), upload_app=UploadRequestHandler())
        body, content_type = multipart([("file", "t.txt", b"threads")])
        scope = upload_scope(f"/api/uploads/{session.session_id}", len(body), content_type)
        sent = asyncio.run(run_app(app, scope, [{"type": "http.request", "body": body}]))
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
        attachments_recorded.disconnect(recorded)
    assert sent[0]["status"] == 201
    assert [name for name, _thread in seen] == ["started", "recorded", "finished"]
    assert len({thread for _name, thread in seen}) == 1
    assert seen[0][1] != threading.get_ident()


def tus_patch_scope(session, upload_id: str, offset: int, length: int) -> dict:
    path = reverse("attachments:tus-upload", args=[session.session_id, upload_id])
    scope = upload_scope(path, length, "application/offset+octet-stream", method="PATCH")
    scope["headers"] += [
        (b"tus-resumable", b"1.0.0"),
        (b"upload-offset", str(offset).encode()),
        (b"authorization", f"Bearer {session.token}".encode()),
        (b"origin", b"http://elsewhere.example"),
    ]
    return scope


def test_tus_patches_answered_on_the_fast_path_get_the_headers_of_djangos_chain():
    """UploadRequestHandler.respond answers in the PATCH's last hop, with the header policy."""
    from django.core.asgi import get_asgi_application

    from attachments import resumable
    from attachments.uploads_asgi import UploadRequestHandler

    session = new_session()
    upload = resumable.create_upload(session, 12, {"filename": "t.bin"})

    def patch_through(app, offset: int, data: bytes) -> tuple[int, dict[bytes, bytes]]:
        scope = tus_patch_scope(session, upload.upload_id, offset, len(data))
        messages = [{"type": "http.request", "body": data[:2], "more_body": True}]
        messages.append({"type": "http.request", "body": data[2:]})
        sent = asyncio.run(run_app(app, scope, messages))
        return sent[0]["status"], {name.lower(): value for name, value in sent[0]["headers"]}

    django_app = get_asgi_application()
    status, async_chain = patch_through(StreamingUploadMiddleware(django_app), 0, b"abcd")
    fast_status, fast = patch_through(
        StreamingUploadMiddleware(django_app, upload_app=UploadRequestHandler()), 4, b"efgh"
    )
    assert status == fast_status == 204
    assert (async_chain.pop(b"upload-offset"), fast.pop(b"upload-offset")) == (b"4", b"8")
    async_chain = _comparable(async_chain)
    assert async_chain.keys() == fast.keys()
    async_chain.pop(b"upload-expires"), fast.pop(b"upload-expires")
    assert fast == async_chain
    assert b"x-frame-options" in fast and b"x-content-type-options" in fast
    assert upload.file_path.read_bytes() == b"abcdefgh"


def test_a_refused_tus_patch_is_answered_while_its_body_is_in_flight():
    """The body read during authorisation and leasing is dropped, not written, when refused."""
    from attachments import resumable
    from macproject.asgi import application

    session = new_session()
    upload = resumable.create_upload(session, 300_000, {"filename": "t.bin"})
    data = b"z" * 200_000
    messages = [
        {"type": "http.request", "body": data[i : i + 50_000], "more_body": i + 50_000 < len(data)}
        for i in range(0, len(data), 50_000)
    ]
    scope = tus_patch_scope(session, upload.upload_id, 7, len(data))  # the upload is at 0
    sent = asyncio.run(run_app(application, scope, messages))
    assert sent[0]["status"] == 409
    assert json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["code"] == "offset_mismatch"
    assert upload.file_path.read_bytes() == b""
    upload.refresh_from_db()
    assert upload.offset == 0 and upload.lease_token == ""


def test_patches_whose_clients_pause_hold_no_upload_thread():
    """
    More PATCHes than there are upload threads, each paused half-way by its
    client: another PATCH is still written and answered meanwhile, and each
    paused one ends with every byte once its client sends the rest.
    """
    from channels.db import database_sync_to_async

    from attachments import resumable
    from attachments.models import Attachment, ResumableUpload
    from attachments.uploads_asgi import UPLOAD_THREADS
    from macproject.asgi import application

    session = new_session()
    data = bytes(range(256)) * 64  # 16 KiB
    half = len(data) // 2
    paused = [
        resumable.create_upload(session, len(data), {"filename": f"p{i}.bin"})
        for i in range(UPLOAD_THREADS + 8)
    ]
    other = resumable.create_upload(session, len(data), {"filename": "other.bin"})

    async def client(upload, resume: asyncio.Event | None) -> int:
        scope = tus_patch_scope(session, upload.upload_id, 0, len(data))
        pieces = [data[:half], data[half:]] if resume else [data]
        queue: asyncio.Queue = asyncio.Queue()
        sent: list = []

        async def receive():
            if queue.empty() and pieces:
                if len(pieces) == 1 and resume is not None:
                    await resume.wait()
                piece = pieces.pop(0)
                return {"type": "http.request", "body": piece, "more_body": bool(pieces)}
            return await queue.get()

        async def send(message):
            sent.append(message)

        await application(scope, receive, send)
        return sent[0]["status"]

    # On a thread that gives its connection back (a thread-sensitive call
    # would keep one open on asgiref's shared thread after the test).
    leased = database_sync_to_async(
        lambda: ResumableUpload.objects.filter(
            pk__in=[u.pk for u in paused], lease_token__gt=""
        ).count()
    )

    async def scenario() -> tuple[int, list[int]]:
        resume = asyncio.Event()
        waiting = [asyncio.create_task(client(upload, resume)) for upload in paused]
        while await leased() < len(paused):  # every paused PATCH holds its upload
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # longer than a PATCH's thread waits for more bytes
        answered = await client(other, None)
        resume.set()
        return answered, await asyncio.gather(*waiting)

    answered, statuses = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert answered == 204
    assert statuses == [204] * len(paused)
    recorded = Attachment.objects.filter(session=session)
    assert recorded.count() == len(paused) + 1
    for attachment in recorded:
        assert (session.directory / attachment.path).read_bytes() == data


@pytest.mark.access_policy("token")
@pytest.mark.parametrize("token", [None, "wrong"])
def test_a_small_upload_without_the_sessions_credentials_is_refused_and_leaves_nothing(token):
    """A body read whole before it is authorised is still refused before a byte is written."""
    from macproject.asgi import application

    session = new_session()
    body, content_type = multipart([("file", "small.txt", b"s" * 1000)])
    scope = upload_scope(f"/api/uploads/{session.session_id}", len(body), content_type)
    if token is not None:
        scope["headers"].append((b"authorization", f"Bearer {token}".encode()))
    sent = asyncio.run(run_app(application, scope, [{"type": "http.request", "body": body}]))
    assert sent[0]["status"] == 404
    assert json.loads(sent[1]["body"])["code"] == "session_not_found"
    attachments = session.directory / "code_workspace/attachments"
    assert not attachments.exists() or [p for p in attachments.rglob("*") if p.is_file()] == []
    assert row_ids(session) == []


@pytest.mark.access_policy("token")
def test_a_small_upload_with_the_sessions_token_is_recorded_in_one_call():
    from macproject.asgi import application

    session = new_session()
    body, content_type = multipart([("file", "small.txt", b"s" * 1000)])
    scope = upload_scope(f"/api/uploads/{session.session_id}", len(body), content_type)
    scope["headers"].append((b"authorization", f"Bearer {session.token}".encode()))
    messages = [
        {"type": "http.request", "body": body[:300], "more_body": True},
        {"type": "http.request", "body": body[300:]},
    ]
    sent = asyncio.run(run_app(application, scope, messages))
    assert sent[0]["status"] == 201
    reply = json.loads(sent[1]["body"])
    assert (session.directory / reply["path"]).read_bytes() == b"s" * 1000
    assert manifest_ids(session) == row_ids(session) == [reply["attachment_id"]]


def test_a_small_upload_whose_client_leaves_mid_body_leaves_nothing():
    from macproject.asgi import application

    session = new_session()
    body, content_type = multipart([("file", "small.txt", b"s" * 1000)])
    scope = upload_scope(f"/api/uploads/{session.session_id}", len(body), content_type)
    messages = [
        {"type": "http.request", "body": body[:300], "more_body": True},
        {"type": "http.disconnect"},
    ]
    assert asyncio.run(run_app(application, scope, messages)) == []
    assert uploaded_files(session) == [] and row_ids(session) == []


@pytest.mark.parametrize("piece", [1000, 4096, 3333])
def test_tus_patches_streamed_in_small_pieces_land_byte_for_byte(settings, piece):
    """
    Small buffers, so that whole ones go around the page cache (O_DIRECT) and
    the body's last buffer is written piece by piece as it comes, from
    offsets that are not block-aligned.
    """
    import hashlib
    import os

    from attachments import resumable
    from attachments.models import Attachment
    from macproject.asgi import application

    settings.ATTACHMENTS_UPLOAD_BUFFER_BYTES = 8192
    session = new_session()
    data = os.urandom(60_000)
    upload = resumable.create_upload(session, len(data), {"filename": "pieces.bin"})
    for start, end in [(0, 5_001), (5_001, 41_000), (41_000, 60_000)]:
        body = data[start:end]
        messages = [
            {
                "type": "http.request",
                "body": body[i : i + piece],
                "more_body": i + piece < len(body),
            }
            for i in range(0, len(body), piece)
        ]
        scope = tus_patch_scope(session, upload.upload_id, start, len(body))
        sent = asyncio.run(run_app(application, scope, messages))
        headers = {name.lower(): value for name, value in sent[0]["headers"]}
        assert (sent[0]["status"], headers.get(b"upload-offset")) == (204, str(end).encode()), sent
    attachment = Attachment.objects.get(session=session)
    assert (session.directory / attachment.path).read_bytes() == data
    assert attachment.sha256 == hashlib.sha256(data).hexdigest()
