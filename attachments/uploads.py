"""
Uploads: the one path from a request body to a recorded attachment.

A body arrives one of two ways: streamed by the ASGI middleware
(`attachments.uploads_asgi`, the fast path, which holds no thread while bytes
arrive), or read by the Django view (any other server, and Django's test
client). Both go through the same steps, in this module:

1. `admit_upload`: the session (resolved and authorised once, by the caller)
   has room, the body is multipart/form-data, and its declared length fits.
2. `MultipartReceiver`: the body is parsed with python-multipart; the `file`
   part streams into `UploadSink` (staging, hashed on the way), anything over
   the limit or malformed stops it and leaves nothing.
3. `accept_upload`: scanners run, then `attachments.committing` records the
   file (manifest entry, row, event) at its commit point.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from django.http import HttpRequest
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from . import paths
from .committing import commit_upload
from .conf import conf
from .exceptions import (
    InvalidMultipart,
    MissingFile,
    MultipleFiles,
    UnsupportedMediaType,
)
from .manifest import AttachmentEntry
from .models import Attachment, Session
from .quotas import Allowance, upload_allowance
from .receiving import LimitExceeded, ReceivedFile, UploadSink
from .scanning import scan_file

# The ASGI scope key under which the streaming middleware hands over its result.
STREAMED_UPLOAD_SCOPE_KEY = "attachments.streamed_upload"
FILE_FIELD = "file"
# Room for multipart framing and small fields on top of the file itself,
# when judging a body by its Content-Length before reading it.
FRAMING_ALLOWANCE = 1 << 20
MAX_FIELD_BYTES = 64 * 1024
# A file up to this size is written out and closed on the event loop: its
# last write only reaches the page cache (the fsync comes at commit), which
# takes less than handing it to a thread.
INLINE_FINISH_BYTES = 64 * 1024
# RFC 2046 caps a boundary at 70 characters; anything far longer is not a
# client's honest mistake, and python-multipart cannot parse it.
MAX_BOUNDARY_BYTES = 200


@dataclasses.dataclass(frozen=True)
class Admission:
    """An upload allowed to start: its session, how many bytes it may have, and its boundary."""

    session: Session
    allowance: Allowance
    boundary: bytes

    @property
    def attachments_path(self) -> Path:
        return paths.attachments_dir(self.session.directory)


@dataclasses.dataclass
class StreamedUpload:
    """What the streaming middleware made of a request body, handed to the view."""

    session: Session | None = None
    received: ReceivedFile | None = None
    # An `ApiError` from receiving the body, or whatever recording it raised
    # (the view raises it, so that Django's chain answers every error).
    error: Exception | None = None
    resumable: Any = None  # a tus PATCH: the ResumableUpload its body went to


def admit_upload(session: Session, content_type: bytes, content_length: int | None) -> Admission:
    """
    Check an upload before a byte of its body is read: raises 415 for a body
    that is not multipart/form-data, 413 when the session has no room or the
    declared length cannot fit.
    """
    media_type, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType()
    if len(boundary) > MAX_BOUNDARY_BYTES:
        raise InvalidMultipart(f"The multipart boundary is longer than {MAX_BOUNDARY_BYTES} bytes.")
    allowance = upload_allowance(session)
    limit = allowance.max_bytes
    if limit is not None and content_length is not None:
        if content_length > limit + FRAMING_ALLOWANCE:
            raise allowance.exceeded()
    return Admission(session, allowance, boundary)


class MultipartReceiver:
    """
    Parses a multipart/form-data body and streams its one `file` part into an
    `UploadSink`. Feed it with `feed()` (async: writes go to a worker thread
    while the caller receives more) or `feed_sync()`, then `finish()`. On any
    error call `abort()`: nothing is left on disk.
    """

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.limit = admission.allowance.max_bytes
        self.buffer_bytes = conf.UPLOAD_BUFFER_BYTES
        self.sink: UploadSink | None = None
        self.received: ReceivedFile | None = None
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
            admission.boundary,
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
            self.sink = UploadSink(self.admission.attachments_path, filename, self.limit)

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

    # Feeding: the parser finds the file's bytes, the sink writes them.

    def _parse(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidMultipart(
                f"The multipart/form-data body could not be parsed: {exc}"
            ) from exc

    def _take_pending(self) -> list[bytes | memoryview]:
        chunks, self._pending, self._pending_bytes = self._pending, [], 0
        return chunks

    async def feed(self, chunk: bytes) -> None:
        if not isinstance(chunk, bytes):
            # The pending views must see bytes that nobody changes.
            chunk = bytes(chunk)
        self._parse(chunk)
        if self._pending_bytes >= self.buffer_bytes:
            await self._flush()
        if self._file_complete and self.sink is not None:
            small = self.sink.size + self._pending_bytes <= INLINE_FINISH_BYTES
            if small and self._inflight is None:
                self.sink.write_chunks(self._take_pending())
                self.received = self.sink.finish()
            else:
                await self._flush()
                await self._drain()
                self.received = await asyncio.to_thread(self.sink.finish)
            self.sink = None

    def feed_sync(self, chunk: bytes) -> None:
        self._parse(chunk)
        if (
            self.sink is not None
            and self._pending
            and (self._pending_bytes >= self.buffer_bytes or self._file_complete)
        ):
            self.sink.write_chunks(self._take_pending())
        if self._file_complete and self.sink is not None:
            self.received = self.sink.finish()
            self.sink = None

    async def _flush(self) -> None:
        if not self._pending or self.sink is None:
            return
        await self._drain()
        loop = asyncio.get_running_loop()
        self._inflight = loop.run_in_executor(None, self.sink.write_chunks, self._take_pending())

    async def _drain(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight

    def finish(self) -> ReceivedFile:
        """The received file, once the whole body has been fed."""
        try:
            self.parser.finalize()
        except MultipartParseError as exc:
            raise InvalidMultipart(
                f"The multipart/form-data body could not be parsed: {exc}"
            ) from exc
        if self.sink is not None:
            raise InvalidMultipart("The multipart/form-data body ended before the file did.")
        if self.received is None:
            raise MissingFile(errors={FILE_FIELD: ["No file was submitted."]})
        return self.received

    async def abort(self) -> None:
        try:
            await self._drain()
        except Exception:  # noqa: BLE001, S110 (the upload is being thrown away either way)
            pass
        await asyncio.to_thread(self.abort_sync)

    def abort_sync(self) -> None:
        if self.sink is not None:
            self.sink.abort()
            self.sink = None
        if self.received is not None:
            self.received.discard()
            self.received = None


def receive_body(admission: Admission, chunks: Any) -> ReceivedFile:
    """
    Receive a whole body from an iterable of byte chunks (the Django path).
    Errors are `ApiError`s, and leave nothing on disk.
    """
    receiver = MultipartReceiver(admission)
    try:
        for chunk in chunks:
            receiver.feed_sync(chunk)
        return receiver.finish()
    except LimitExceeded:
        receiver.abort_sync()
        raise admission.allowance.exceeded() from None
    except BaseException:
        receiver.abort_sync()
        raise


def streamed_upload(request: HttpRequest) -> StreamedUpload | None:
    """What the streaming middleware handed over for this request, if it streamed the body."""
    streamed = getattr(request, "scope", {}).get(STREAMED_UPLOAD_SCOPE_KEY)
    return streamed if isinstance(streamed, StreamedUpload) else None


def receive_upload(request: HttpRequest, session: Session) -> ReceivedFile:
    """
    The file sent in the `file` field, in staging and hashed. Raises an
    `ApiError` for a body that is not a single-file multipart upload or is
    over the limit; in that case nothing is left on disk.
    """
    streamed = streamed_upload(request)
    if streamed is not None:
        if streamed.error is not None:
            raise streamed.error
        assert streamed.received is not None
        return streamed.received
    admission = admit_upload(
        session,
        request.META.get("CONTENT_TYPE", "").encode("latin-1"),
        _int_or_none(request.META.get("CONTENT_LENGTH")),
    )
    return receive_body(admission, request_chunks(request, conf.UPLOAD_BUFFER_BYTES))


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def request_chunks(request: HttpRequest, size: int) -> Any:
    """A Django request's body, read `size` bytes at a time."""
    while chunk := request.read(size):
        yield chunk


def accept_upload(
    session: Session, received: ReceivedFile, source: str = Attachment.Source.USER_UPLOAD
) -> Attachment:
    """
    Scan a received file and record it (see `attachments.committing`). On
    any failure before the commit point the file is removed and nothing
    keeps a trace of it.
    """
    try:
        metadata = scan_file(received.path)
        entry = AttachmentEntry.for_new_file(
            attachment_id=received.attachment_id,
            name=received.name,
            path=(received.final_directory() / received.filename)
            .relative_to(session.directory)
            .as_posix(),
            head=received.head,
            size=received.size,
            sha256=received.sha256,
            source=source,
            metadata=metadata,
        )
    except BaseException:
        received.discard()
        raise
    return commit_upload(session, received, entry)
