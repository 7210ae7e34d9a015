"""
Sending files over HTTP: conditional requests (ETag from the sha256, 304,
If-Range), single byte ranges (206, 416), a Content-Disposition that no file
name can break, `nosniff` always, active content (HTML, SVG, XML,
JavaScript) never rendered inline from the app's origin, and optionally the
body handed to the reverse proxy (X-Accel-Redirect / X-Sendfile).

Bodies are read in chunks on worker threads. Under ASGI they are async
iterators: Django consumes a *sync* streaming iterator under ASGI by reading
it whole into a list first, which would hold a whole file in memory. The next
chunk is read only when the server has taken the last one, so memory stays
flat where the server applies backpressure to `send` (Uvicorn does); Daphne
does not, and queues whatever a slow client has not yet taken.

A file's body goes faster around Django when `FileBodyMiddleware` wraps the
Django application: the view then returns the headers only and leaves the
open file to the middleware, which has the server send it itself where the
server offers the ASGI `http.response.pathsend` extension (Granian: the
kernel copies the file), and otherwise streams it in large reads, each read
overlapping the sending of the one before (Django's own ASGI handler would cut
every chunk into 64 KiB messages).
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import secrets
import sys
import threading
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.cache import get_conditional_response
from django.utils.http import http_date, parse_etags, parse_http_date_safe

from .conf import conf

if TYPE_CHECKING:
    from .archive import SessionArchive
    from .lookup import ResolvedArtifact

# Large enough that the per-chunk cost of a thread hop is small against the
# copy, small enough that a connection holds little memory.
CHUNK_BYTES = 1 << 20
# A slow source (a compressor) hands over what it has after this long, so the
# first bytes leave early and the stream keeps moving.
MAX_BATCH_SECONDS = 0.02
# Reads of a file body sent by `FileBodyMiddleware`: fewer, larger messages
# cost the server less per byte; two are in memory at a time per response.
FILE_READ_BYTES = 4 << 20
# Where `FileBodyMiddleware` offers its slot to the view, in the ASGI scope.
FILE_BODY_SCOPE_KEY = "mac.file_body"
# The response header by which a view hands its file to the middleware; the
# middleware removes it, so it never leaves the process.
FILE_BODY_HEADER = "X-Mac-File-Body"

OCTET_STREAM = "application/octet-stream"
_MIME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
# Types a browser would run or render as a document able to run script.
_ACTIVE_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/xsl",
        "application/xslt+xml",
        "text/javascript",
        "text/ecmascript",
        "text/jscript",
        "text/x-javascript",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/x-ecmascript",
    }
)
# Served with every active-content response, in case a browser renders it anyway:
# no script, an opaque origin, nothing loaded.
SANDBOX_POLICY = "sandbox; default-src 'none'"
# RFC 5987 attr-char, beyond letters and digits (which `quote` always keeps).
_ATTR_CHAR_EXTRA = "!#$&+-.^_`|~"
# Printable ASCII safe inside the quoted fallback name for every known client.
_FALLBACK_SAFE = re.compile(r"[^A-Za-z0-9 !#$&'()+,\-.=@\[\]^_`{}~]")


# Headers --------------------------------------------------------------------


def safe_content_type(mime: str) -> str:
    """`mime` if it is a well-formed type/subtype, else application/octet-stream."""
    essence = (mime or "").split(";", 1)[0].strip()
    return essence.lower() if _MIME_RE.match(essence) else OCTET_STREAM


def is_active_content(mime: str) -> bool:
    """True for types a browser would render as a document that can run script."""
    essence = safe_content_type(mime)
    return essence in _ACTIVE_TYPES or essence.endswith("+xml") or essence.startswith("multipart/")


def _ascii_fallback(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    ascii_only = "".join(
        ch if ch.isascii() else ("" if unicodedata.combining(ch) else "_") for ch in decomposed
    )
    return _FALLBACK_SAFE.sub("_", ascii_only).strip(" ") or "download"


def content_disposition(filename: str, *, as_attachment: bool) -> str:
    """
    A Content-Disposition value (RFC 6266) carrying `filename` whole in
    `filename*` (RFC 5987: UTF-8, percent-encoded) with a plain-ASCII
    `filename` for old clients. The value is printable ASCII whatever the
    name holds (quotes, CR/LF, semicolons, unicode), so it can neither end
    the header nor add a parameter, and `filename*` decodes to the name.
    """
    # Lone surrogates cannot be UTF-8 encoded; nothing else is altered.
    name = filename.encode("utf-8", "replace").decode("utf-8") or "download"
    disposition = "attachment" if as_attachment else "inline"
    encoded = quote(name, safe=_ATTR_CHAR_EXTRA, encoding="utf-8")
    return f"{disposition}; filename=\"{_ascii_fallback(name)}\"; filename*=UTF-8''{encoded}"


def strong_etag(sha256_hex: str) -> str:
    return f'"{sha256_hex}"'


def repr_digest(sha256_hex: str) -> str:
    """The RFC 9530 Repr-Digest value: the digest of the whole file, also on a 206."""
    return "sha-256=:" + base64.b64encode(bytes.fromhex(sha256_hex)).decode("ascii") + ":"


def data_uri(file: io.FileIO, mime: str, max_bytes: int) -> str | None:
    """The file as a base64 data URI, or None if it is larger than `max_bytes` (0: never)."""
    if max_bytes <= 0:
        return None
    file.seek(0)
    data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        return None
    return f"data:{safe_content_type(mime)};base64,{base64.b64encode(data).decode('ascii')}"


# Ranges -----------------------------------------------------------------------


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


class RangeNotSatisfiable(Exception):
    pass


_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


# No file is this large; a longer number means "past any end", and is never
# handed to int(), which refuses more than 4300 digits.
_MAX_POSITION_DIGITS = 19


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    if len(digits) > _MAX_POSITION_DIGITS:
        return sys.maxsize
    return int(digits)


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """
    The single byte range that `header` asks of a `size`-byte body, or None
    to send the whole body: no header, a form not served here (several
    ranges, another unit) or bad syntax, which RFC 9110 lets a server ignore.
    Raises `RangeNotSatisfiable` for a range that starts past the end.
    """
    if not header:
        return None
    match = _RANGE_RE.match(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = _position(last)
        if suffix == 0:
            raise RangeNotSatisfiable()
        if size == 0:
            return None  # the whole (empty) body is the last `suffix` bytes
        return ByteRange(max(0, size - suffix), size - 1)
    start = _position(first)
    end = _position(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable()
    return ByteRange(start, min(end, size - 1))


def _if_range_passes(request: HttpRequest, etag: str | None, last_modified: int | None) -> bool:
    """RFC 9110 13.1.5: a range applies only to the representation the client already has."""
    if_range = request.headers.get("If-Range")
    if if_range is None:
        return True
    if_range = if_range.strip()
    if if_range.startswith(('"', "W/")):
        # Strong comparison: a weak validator never matches.
        return (
            etag is not None and not if_range.startswith("W/") and parse_etags(if_range) == [etag]
        )
    since = parse_http_date_safe(if_range)
    return since is not None and last_modified is not None and since == last_modified


# Bodies -----------------------------------------------------------------------


class _Pump:
    """
    Pulls from a blocking chunk iterator, `batch` bytes a call (less if the
    source is slow), one caller at a time; `close()` waits for a pull in
    flight, so it is safe from any thread.
    """

    def __init__(
        self, source: Iterator[bytes], on_close: Callable[[], None] | None, batch: int
    ) -> None:
        self._source = source
        self._on_close = on_close
        self._batch = batch
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> bytes:
        with self._lock:
            if self._closed:
                return b""
            parts: list[bytes] = []
            taken = 0
            deadline = time.monotonic() + MAX_BATCH_SECONDS
            for part in self._source:
                if part:
                    parts.append(part)
                    taken += len(part)
                if taken >= self._batch or (taken and time.monotonic() > deadline):
                    break
            return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                close_source = getattr(self._source, "close", None)
                if close_source is not None:
                    close_source()
            finally:
                if self._on_close is not None:
                    self._on_close()


class _SyncBody:
    def __init__(self, pump: _Pump) -> None:
        self._pump = pump

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        chunk = self._pump.take()
        if not chunk:
            self._pump.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        self._pump.close()


class _AsyncBody:
    """Each chunk is read on a worker thread, so the event loop never waits on the disk."""

    def __init__(self, pump: _Pump) -> None:
        self._pump = pump

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await asyncio.to_thread(self._pump.take)
        except BaseException:
            # Cancelled (the client left) or failed: Django will not call
            # close(), so release the file once the read in flight is done.
            self._close_soon()
            raise
        if not chunk:
            self._close_soon()
            raise StopAsyncIteration
        return chunk

    def _close_soon(self) -> None:
        asyncio.get_running_loop().run_in_executor(None, self._pump.close)

    def close(self) -> None:
        self._pump.close()


def streaming_body(
    request: HttpRequest,
    chunks: Iterator[bytes],
    on_close: Callable[[], None] | None = None,
    batch: int = CHUNK_BYTES,
) -> _SyncBody | _AsyncBody:
    """
    `chunks` as a StreamingHttpResponse body fit for the request's handler:
    async under ASGI, sync under WSGI. Blocking reads are batched to `batch`
    bytes; `on_close` runs once, when the body ends or the response closes.
    """
    pump = _Pump(chunks, on_close, batch)
    return _AsyncBody(pump) if isinstance(request, ASGIRequest) else _SyncBody(pump)


def read_chunks(file: io.FileIO, start: int, length: int) -> Iterator[bytes]:
    """`length` bytes of `file` from `start`, CHUNK_BYTES at a time, never more in memory."""
    file.seek(start)
    remaining = length
    while remaining > 0:
        chunk = file.read(min(CHUNK_BYTES, remaining))
        if not chunk:
            # The file shrank after Content-Length was sent: end the
            # connection rather than let the client take a short body as whole.
            raise OSError(f"{file.name!r} ended {remaining} bytes early.")
        remaining -= len(chunk)
        yield chunk


# Responses ------------------------------------------------------------------


def _json_error(status: int, code: str, detail: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"detail": detail, "code": code}, status=status)
    response["X-Content-Type-Options"] = "nosniff"
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def range_not_satisfiable(size: int) -> JsonResponse:
    return _json_error(
        416,
        "range_not_satisfiable",
        f"The requested range is outside the {size} bytes available.",
        Content_Range=f"bytes */{size}",
    )


def _conditional(
    request: HttpRequest, headers: dict[str, str], etag: str | None, last_modified: int | None
) -> HttpResponseBase | None:
    """A 304 or 412 for a conditional request that calls for one, else None."""
    proto = HttpResponse()
    for name in ("ETag", "Last-Modified", "Cache-Control"):
        if name in headers:
            proto[name] = headers[name]
    outcome = get_conditional_response(
        request, etag=etag, last_modified=last_modified, response=proto
    )
    if outcome is proto:
        return None
    if outcome.status_code == 412:
        return _json_error(412, "precondition_failed", "A precondition in the request failed.")
    return _not_modified(outcome)


def _not_modified(outcome: HttpResponseBase) -> StreamingHttpResponse:
    """
    The 304 as a response without a body or a Content-Length. RFC 9110
    (8.6) lets a 304 carry only the length the 200 would have had, and
    Django's CommonMiddleware gives every non-streaming response the length
    of its (here empty) content: a streaming response it leaves alone.
    """
    response = StreamingHttpResponse((), status=304)
    del response["Content-Type"]
    for name, value in outcome.items():
        response[name] = value
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _respond(
    request: HttpRequest,
    headers: dict[str, str],
    *,
    size: int | None,
    etag: str | None,
    last_modified: int | None,
    body: Callable[[int, int], Iterator[bytes]],
    close: Callable[[], None],
    file: io.FileIO | None = None,
) -> HttpResponseBase:
    """
    The response for a body of `size` bytes (None: unknown, so no ranges)
    that `body(start, length)` yields on demand; `close` releases what the
    body holds, whether or not it is sent. A body that is `file` as it is
    goes to `FileBodyMiddleware` when it wraps the application.
    """
    try:
        conditional = _conditional(request, headers, etag, last_modified)
        if conditional is not None:
            close()
            return conditional
        byte_range = None
        if size is None:
            headers["Accept-Ranges"] = "none"
        else:
            headers["Accept-Ranges"] = "bytes"
            # Range is defined for GET only; HEAD describes the whole body.
            if request.method == "GET" and _if_range_passes(request, etag, last_modified):
                try:
                    byte_range = parse_range(request.headers.get("Range"), size)
                except RangeNotSatisfiable:
                    close()
                    return range_not_satisfiable(size)
            if byte_range is not None:
                headers["Content-Range"] = byte_range.content_range(size)
            headers["Content-Length"] = str(byte_range.length if byte_range else size)
        status = 206 if byte_range else 200
        start = byte_range.start if byte_range else 0
        length = byte_range.length if byte_range else (-1 if size is None else size)
        slot = _file_body_slot(request)
        if request.method == "HEAD":
            close()
            content = streaming_body(request, iter(()))
        elif file is not None and slot is not None and length >= 0:
            handed: HttpResponseBase = _FileBodyResponse(status, close)
            handed[FILE_BODY_HEADER] = slot.offer(file, start, length)
            for name, value in headers.items():
                handed[name] = value
            return handed
        else:
            content = streaming_body(request, body(start, length), close)
    except BaseException:
        close()
        raise
    response = StreamingHttpResponse(content, status=status)
    for name, value in headers.items():
        response[name] = value
    return response


def file_headers(
    *, name: str, mime: str, sha256: str, mtime: float, as_attachment: bool
) -> dict[str, str]:
    """The headers every response for one file carries, 200, 206 or 304 alike."""
    active = is_active_content(mime)
    headers = {
        "Content-Type": safe_content_type(mime),
        # Active content is never shown inline: an uploaded page must not
        # run script with the app's origin and cookies.
        "Content-Disposition": content_disposition(name, as_attachment=as_attachment or active),
        "X-Content-Type-Options": "nosniff",
        "Last-Modified": http_date(int(mtime)),
        "Cache-Control": "private, no-cache",
    }
    if active:
        headers["Content-Security-Policy"] = SANDBOX_POLICY
    if sha256:
        headers["ETag"] = strong_etag(sha256)
        headers["Repr-Digest"] = repr_digest(sha256)
    return headers


def sendfile_target(real_path: str) -> tuple[str, str] | None:
    """
    The (header, value) that hands `real_path` to the reverse proxy, or None
    when that is not configured or the path cannot be said in a header.
    """
    header = conf.SENDFILE_HEADER
    if header is None:
        return None
    warehouse = os.path.realpath(conf.WAREHOUSE_DIR)
    relative = os.path.relpath(real_path, warehouse)
    if relative == os.curdir or relative.startswith(os.pardir):
        return None
    if header == "X-Accel-Redirect":
        root = conf.SENDFILE_ROOT
        if not root:
            return None
        # nginx percent-decodes the URI, so every name fits in ASCII.
        return header, root.rstrip("/") + "/" + quote(
            relative, safe="/", encoding="utf-8", errors="surrogateescape"
        )
    location = os.fsencode(os.path.join(conf.SENDFILE_ROOT or warehouse, relative))
    if any(byte < 0x20 or byte == 0x7F for byte in location):
        return None
    # The proxy opens the path's bytes as they are; latin-1 carries them unchanged.
    return header, location.decode("latin-1")


def serve_artifact(
    request: HttpRequest, artifact: ResolvedArtifact, *, as_attachment: bool
) -> HttpResponseBase:
    """The artifact's file: 200, 206, 304, 412 or 416, or handed to the reverse proxy."""
    file = artifact.open()
    try:
        stat = os.fstat(file.fileno())
        # A record that no longer matches the file must not vouch for its bytes.
        sha256 = artifact.sha256 if artifact.sha256 and artifact.size == stat.st_size else ""
        headers = file_headers(
            name=artifact.name,
            mime=artifact.mime,
            sha256=sha256,
            mtime=stat.st_mtime,
            as_attachment=as_attachment,
        )
        etag = headers.get("ETag")
        last_modified = int(stat.st_mtime)
        target = sendfile_target(os.path.realpath(artifact.file_path))
    except BaseException:
        file.close()
        raise
    if target is not None:
        file.close()
        conditional = _conditional(request, headers, etag, last_modified)
        if conditional is not None:
            return conditional
        # The proxy sends the body and answers Range itself.
        response = HttpResponse()
        for name, value in (*headers.items(), target):
            response[name] = value
        return response
    return _respond(
        request,
        headers,
        size=stat.st_size,
        etag=etag,
        last_modified=last_modified,
        body=lambda start, length: read_chunks(file, start, length),
        close=file.close,
        file=file,
    )


def serve_archive(request: HttpRequest, archive: SessionArchive, filename: str) -> HttpResponseBase:
    """
    The zip, streamed as it is built. A stored archive (`compress=false`)
    has a known length and a strong ETag, so it is served with ranges.
    """
    headers = {
        "Content-Type": "application/zip",
        "Content-Disposition": content_disposition(filename, as_attachment=True),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-cache",
    }
    if archive.etag is not None:
        headers["ETag"] = archive.etag
    return _respond(
        request,
        headers,
        size=archive.size,
        etag=archive.etag,
        last_modified=None,
        body=archive.chunks,
        close=archive.close,
    )


# Sending file bodies around Django ---------------------------------------------

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class _FileBody:
    file: io.FileIO
    start: int
    length: int


class FileBodySlot:
    """
    Where a view leaves the open file of its response for `FileBodyMiddleware`
    (one per request). The token in the response header must match, so a
    response that some middleware replaced on the way out (an error page, a
    304) is sent as it is.
    """

    def __init__(self, pathsend: bool) -> None:
        self.pathsend = pathsend
        self._token = ""
        self._body: _FileBody | None = None

    def offer(self, file: io.FileIO, start: int, length: int) -> str:
        """Leave `length` bytes of `file` from `start` to be sent; the header value to set."""
        self._token = secrets.token_hex(8)
        self._body = _FileBody(file, start, length)
        return self._token

    def take(self, token: str) -> _FileBody | None:
        body, self._body = self._body, None
        return body if body is not None and secrets.compare_digest(token, self._token) else None


class _FileBodyResponse(HttpResponse):
    """The headers of a file response whose body `FileBodyMiddleware` sends."""

    def __init__(self, status: int, on_close: Callable[[], None]) -> None:
        super().__init__(status=status)
        self._on_close = on_close

    def close(self) -> None:
        # Django closes the response once the last body message is sent, that
        # is once the middleware has sent the whole file.
        try:
            self._on_close()
        finally:
            super().close()


def _file_body_slot(request: HttpRequest) -> FileBodySlot | None:
    scope = getattr(request, "scope", None)
    slot = scope.get(FILE_BODY_SCOPE_KEY) if isinstance(scope, dict) else None
    return slot if isinstance(slot, FileBodySlot) else None


class FileBodyMiddleware:
    """
    ASGI middleware, around the Django application, that sends the bodies of
    file responses itself (see the module docstring): with the server's
    `http.response.pathsend` for a whole file where the server offers it,
    otherwise in `FILE_READ_BYTES` reads.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extensions = scope.get("extensions") or {}
        slot = FileBodySlot(pathsend="http.response.pathsend" in extensions)
        pending: _FileBody | None = None
        marker = FILE_BODY_HEADER.lower().encode("latin-1")

        async def send_file_bodies(message: Message) -> None:
            nonlocal pending
            if message["type"] == "http.response.start":
                headers = message.get("headers") or []
                token = next((value for name, value in headers if name.lower() == marker), None)
                if token is not None:
                    pending = slot.take(token.decode("latin-1"))
                    message = {**message, "headers": [h for h in headers if h[0].lower() != marker]}
                await send(message)
            elif pending is not None and message["type"] == "http.response.body":
                if not message.get("more_body"):
                    body, pending = pending, None
                    try:
                        await _send_file(send, body, slot.pathsend)
                    finally:
                        # The response closes it too, but only if the send
                        # ended well: a server that fails a send mid-way
                        # must not leave the file open.
                        body.file.close()
            else:
                await send(message)

        await self.app({**scope, FILE_BODY_SCOPE_KEY: slot}, receive, send_file_bodies)


# The open file by its descriptor: the server opens the very file the view
# checked and opened, even if its path has since been replaced by a link
# (workflow nodes write in the session directory).
_PROC_FD = "/proc/self/fd"
# Granian opens a pathsend path only after the application has returned, so
# the descriptor named in it is a duplicate held this long afterwards...
PATHSEND_HOLD_SECONDS = 10.0
# ...and at most this many at once; past that, bodies are streamed.
PATHSEND_MAX_HELD = 1024


class _HeldDescriptors:
    """Duplicates of open files, kept open for the server to open by /proc path, then closed."""

    def __init__(self) -> None:
        self.count = 0

    def hold(self, fd: int) -> int:
        held = os.dup(fd)
        self.count += 1
        asyncio.get_running_loop().call_later(PATHSEND_HOLD_SECONDS, self._release, held)
        return held

    def _release(self, held: int) -> None:
        self.count -= 1
        os.close(held)


_held = _HeldDescriptors()


async def _send_file(send: Send, body: _FileBody, pathsend: bool) -> None:
    fd = body.file.fileno()
    whole = body.start == 0 and body.length == os.fstat(fd).st_size
    if pathsend and whole and _held.count < PATHSEND_MAX_HELD and os.path.isdir(_PROC_FD):
        held = _held.hold(fd)
        await send({"type": "http.response.pathsend", "path": f"{_PROC_FD}/{held}"})
        return
    loop = asyncio.get_running_loop()
    offset, remaining = body.start, body.length

    def read(at: int, size: int) -> bytes:
        return os.pread(fd, size, at)

    next_read = loop.run_in_executor(None, read, offset, min(FILE_READ_BYTES, remaining))
    try:
        while remaining > 0:
            chunk = await next_read
            if not chunk:
                # The file shrank after Content-Length was sent: end the
                # connection rather than let the client take a short body as whole.
                raise OSError(f"{body.file.name!r} ended {remaining} bytes early.")
            offset += len(chunk)
            remaining -= len(chunk)
            if remaining > 0:
                # The next read overlaps the sending of this chunk.
                next_read = loop.run_in_executor(
                    None, read, offset, min(FILE_READ_BYTES, remaining)
                )
            await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
    finally:
        # The client left mid-way: the file closes after this returns, so
        # let the read in flight finish first.
        if not next_read.done():
            await asyncio.wait([next_read])
        if not next_read.cancelled():
            next_read.exception()
    if body.length == 0:
        await send({"type": "http.response.body", "body": b""})
