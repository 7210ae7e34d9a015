"""
Streaming uploads at the ASGI layer.

Django's ASGI handler spools a whole request body to a temporary file before
any view runs, so a large upload would be written to disk twice. For the
upload route only, `StreamingUploadMiddleware` parses the multipart body as it
arrives and writes the file straight to its final place (hashing it on the
way, on a worker thread so the event loop keeps receiving), then hands Django
the request with an empty body and the result in the scope. The view records
the file exactly as it would one that Django parsed, and any file it does not
claim is removed when the request ends.

The access check (`attachments.access.authorize_scope`) runs before a byte of
the body is read: a request that may not reach the session is answered, by
Django, with the same 404 as a session that does not exist, and nothing is
written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from django.urls import Resolver404, ResolverMatch, resolve
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from . import paths
from .access import authorize_scope
from .conf import conf
from .exceptions import (
    ApiError,
    InvalidMultipart,
    MultipleFiles,
    UnsupportedMediaType,
)
from .quotas import upload_allowance
from .receiving import LimitExceeded, ReceivedFile, UploadSink
from .uploads import (
    FILE_FIELD,
    STREAMED_UPLOAD_SCOPE_KEY,
    StreamedUpload,
    declared_length_exceeds,
)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UPLOAD_VIEW_NAME = "attachments:uploads"
MAX_FIELD_BYTES = 64 * 1024


class ClientDisconnected(Exception):
    pass


def resolve_http(scope: Scope, method: str) -> ResolverMatch | None:
    """
    The URL route of an HTTP request with this method, resolved as Django
    will resolve it (under the scope's root path), or None. For ASGI
    middlewares that serve some of Django's routes themselves.
    """
    if scope["type"] != "http" or scope["method"] != method:
        return None
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    try:
        return resolve(path)
    except Resolver404:
        return None


def upload_session_id(scope: Scope) -> str | None:
    """The session id if this request is an upload POST to the attachments app, else None."""
    match = resolve_http(scope, "POST")
    if match is None or match.view_name != UPLOAD_VIEW_NAME:
        return None
    return str(match.kwargs.get("session_id", ""))


class _MultipartReceiver:
    """Feeds body chunks to the parser and the bytes of the `file` part to an `UploadSink`."""

    def __init__(self, boundary: bytes, attachments_path: Any, limit: int | None) -> None:
        self.attachments_path = attachments_path
        self.limit = limit
        self.buffer_bytes = conf.UPLOAD_BUFFER_BYTES
        self.sink: UploadSink | None = None
        self.received: ReceivedFile | None = None
        self.error: ApiError | None = None
        # Views into the received body chunks, handed to the sink without copying.
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._inflight: asyncio.Future[None] | None = None
        self._headers: dict[bytes, bytes] = {}
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._part: str | None = None  # "file", "skip" or "field"
        self._file_complete = False
        self._field_bytes = 0
        self._file_bytes = 0
        self.parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            },
        )

    # Parser callbacks run synchronously inside parser.write().

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._part = None

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _disposition, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = options.get(b"filename")
        if raw_filename is None:
            self._part = "field"
            return
        filename = paths.client_file_name(raw_filename.decode("utf-8", "replace"))
        if name != FILE_FIELD or filename is None:
            # Browsers send an empty filename for an empty file input.
            self._part = "skip"
        elif self.sink is not None or self.received is not None:
            raise MultipleFiles()
        else:
            self._part = "file"
            self.sink = UploadSink(self.attachments_path, filename, self.limit)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "file":
            self._file_bytes += end - start
            if self.limit is not None and self._file_bytes > self.limit:
                raise LimitExceeded(self.limit)
            self._pending.append(
                data if start == 0 and end == len(data) else memoryview(data)[start:end]
            )
            self._pending_bytes += end - start
        elif self._part == "field":
            self._field_bytes += end - start
            if self._field_bytes > MAX_FIELD_BYTES:
                raise InvalidMultipart("Form fields other than 'file' are limited to 64 KiB.")

    def _on_part_end(self) -> None:
        if self._part == "file":
            self._file_complete = True

    # The async side: hand full buffers to a worker thread, one at a time.

    async def feed(self, chunk: bytes) -> None:
        if not isinstance(chunk, bytes):
            # The pending views must see bytes that nobody changes.
            chunk = bytes(chunk)
        self.parser.write(chunk)
        if self._pending_bytes >= self.buffer_bytes:
            await self._flush()
        if self._file_complete and self.sink is not None:
            await self._flush()
            await self._drain()
            self.received = await asyncio.to_thread(self.sink.finish)
            self.sink = None

    async def _flush(self) -> None:
        if not self._pending or self.sink is None:
            return
        await self._drain()
        chunks, self._pending, self._pending_bytes = self._pending, [], 0
        loop = asyncio.get_running_loop()
        self._inflight = loop.run_in_executor(None, self.sink.write_chunks, chunks)

    async def _drain(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight

    async def finish(self) -> None:
        self.parser.finalize()
        if self.sink is not None:
            # The body ended inside the file part.
            raise InvalidMultipart("The multipart/form-data body ended before the file did.")

    async def abort(self) -> None:
        try:
            await self._drain()
        except Exception:  # noqa: BLE001, S110 (the upload is being thrown away either way)
            pass
        if self.sink is not None:
            await asyncio.to_thread(self.sink.abort)
            self.sink = None
        if self.received is not None:
            await asyncio.to_thread(self.received.discard)
            self.received = None


class StreamingUploadMiddleware:
    """ASGI middleware that streams upload bodies to disk before Django sees the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = upload_session_id(scope)
        if session_id is None:
            await self.app(scope, receive, send)
            return
        try:
            outcome = await self._receive(scope, receive, session_id)
        except ClientDisconnected:
            return
        forwarded = dict(scope)
        forwarded[STREAMED_UPLOAD_SCOPE_KEY] = outcome
        forwarded["headers"] = [
            (name, b"0" if name.lower() == b"content-length" else value)
            for name, value in scope["headers"]
        ]
        try:
            await self.app(forwarded, _empty_body_receive(receive), send)
        finally:
            received = outcome.received
            if received is not None and not received.claimed:
                await asyncio.to_thread(received.discard)

    async def _receive(self, scope: Scope, receive: Receive, session_id: str) -> StreamedUpload:
        try:
            session = await authorize_scope(scope, session_id)
            allowance = await database_sync_to_async(upload_allowance)(session)
        except ApiError as exc:
            return StreamedUpload(error=exc)
        headers = {name.lower(): value for name, value in scope["headers"]}
        content_type, options = parse_options_header(headers.get(b"content-type", b""))
        boundary = options.get(b"boundary")
        if content_type != b"multipart/form-data" or not boundary:
            return StreamedUpload(error=UnsupportedMediaType())
        try:
            declared: int | None = int(headers.get(b"content-length", b""))
        except ValueError:
            declared = None
        if declared_length_exceeds(declared, allowance.max_bytes):
            return StreamedUpload(error=allowance.exceeded())

        receiver = _MultipartReceiver(
            boundary, paths.attachments_dir(allowance.session.directory), allowance.max_bytes
        )
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnected()
                body = message.get("body", b"")
                if body:
                    await receiver.feed(body)
                if not message.get("more_body", False):
                    break
            await receiver.finish()
        except LimitExceeded:
            await receiver.abort()
            return StreamedUpload(error=allowance.exceeded())
        except ApiError as exc:
            await receiver.abort()
            return StreamedUpload(error=exc)
        except MultipartParseError as exc:
            await receiver.abort()
            return StreamedUpload(
                error=InvalidMultipart(f"The multipart/form-data body could not be parsed: {exc}")
            )
        except BaseException:
            await receiver.abort()
            raise
        return StreamedUpload(received=receiver.received)


def _empty_body_receive(receive: Receive) -> Receive:
    """A receive callable that reports an empty body, then waits for the disconnect."""
    sent_body = False

    async def wrapped() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": b"", "more_body": False}
        while True:
            # Whatever is left of an over-size body is read and dropped.
            message = await receive()
            if message["type"] == "http.disconnect":
                return message

    return wrapped
