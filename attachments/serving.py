"""
File responses: an artifact's bytes and a session's zip, with conditional
requests (304, If-Range), single byte ranges (206, 416), `nosniff` always,
active content (HTML, SVG, XML, JavaScript) never rendered inline from the
app's origin, and optionally the body handed to the reverse proxy
(X-Accel-Redirect / X-Sendfile). The headers come from
`attachments.file_headers`, the bodies from `attachments.body_streams`, and
a whole file's body goes around Django through
`attachments.file_body_middleware` where that wraps the application.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import quote

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.cache import get_conditional_response
from django.utils.http import http_date

from .body_streams import read_chunks, streaming_body
from .conf import conf
from .file_body_middleware import FILE_BODY_HEADER, FileBodyResponse, file_body_slot
from .file_headers import (
    SANDBOX_POLICY,
    RangeNotSatisfiable,
    content_disposition,
    if_range_passes,
    is_active_content,
    parse_range,
    repr_digest,
    safe_content_type,
    strong_etag,
)

if TYPE_CHECKING:
    from .archive import SessionArchive
    from .artifact_lookup import ResolvedArtifact


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
            if request.method == "GET" and if_range_passes(request, etag, last_modified):
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
        slot = file_body_slot(request)
        if request.method == "HEAD":
            close()
            content = streaming_body(request, iter(()))
        elif file is not None and slot is not None and length >= 0:
            handed: HttpResponseBase = FileBodyResponse(status, close)
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
