"""
Getting the uploaded file for a request, whichever way its body arrived:
already streamed to disk by `attachments.asgi.StreamingUploadMiddleware`, or
parsed by Django with `AttachmentUploadHandler`.
"""

from __future__ import annotations

import dataclasses

from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest
from django.http.multipartparser import MultiPartParserError

from . import paths
from .exceptions import (
    ApiError,
    InvalidMultipart,
    MissingFile,
    MultipleFiles,
    UnsupportedMediaType,
)
from .models import Session
from .quotas import Allowance, upload_allowance
from .receiving import AttachmentUploadHandler, ReceivedFile, StreamedUploadedFile

# The ASGI scope key under which the streaming middleware hands over its result.
STREAMED_UPLOAD_SCOPE_KEY = "attachments.streamed_upload"
FILE_FIELD = "file"
# Room for multipart framing and small fields on top of the file itself,
# when judging a body by its Content-Length before reading it.
FRAMING_ALLOWANCE = 1 << 20


@dataclasses.dataclass
class StreamedUpload:
    """What the streaming middleware made of a request body."""

    received: ReceivedFile | None = None
    error: ApiError | None = None


def declared_length_exceeds(content_length: int | None, limit: int | None) -> bool:
    return (
        limit is not None
        and content_length is not None
        and content_length > limit + FRAMING_ALLOWANCE
    )


def receive_upload(request: HttpRequest, session: Session) -> ReceivedFile:
    """
    The file sent in the `file` field, written to its final place and hashed.
    Raises an `ApiError` for a body that is not a single-file multipart upload
    or is over the limit; in that case nothing is left on disk.
    """
    streamed = getattr(request, "scope", {}).get(STREAMED_UPLOAD_SCOPE_KEY)
    if isinstance(streamed, StreamedUpload):
        if streamed.error is not None:
            raise streamed.error
        if streamed.received is None:
            raise MissingFile(errors={FILE_FIELD: ["No file was submitted."]})
        return streamed.received
    return _receive_with_django(request, session)


def _receive_with_django(request: HttpRequest, session: Session) -> ReceivedFile:
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType()
    allowance = upload_allowance(session)
    try:
        content_length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        content_length = None
    if declared_length_exceeds(content_length, allowance.max_bytes):
        raise allowance.exceeded()
    handler = AttachmentUploadHandler(
        paths.attachments_dir(session.directory), allowance.max_bytes, request
    )
    request.upload_handlers = [handler]
    try:
        chosen = _single_file(request, handler, allowance)
    except BaseException:
        for received in handler.received:
            received.discard()
        raise
    # Files in other fields, or extra files, are never kept.
    for received in handler.received:
        if received is not chosen:
            received.discard()
    return chosen


def _single_file(
    request: HttpRequest, handler: AttachmentUploadHandler, allowance: Allowance
) -> ReceivedFile:
    try:
        files = request.FILES.getlist(FILE_FIELD)
    except (MultiPartParserError, SuspiciousOperation) as exc:
        raise InvalidMultipart(f"The multipart/form-data body could not be parsed: {exc}") from exc
    if handler.limit_exceeded is not None:
        raise allowance.exceeded()
    if not files:
        raise MissingFile(errors={FILE_FIELD: ["No file was submitted."]})
    if len(files) > 1:
        raise MultipleFiles()
    uploaded = files[0]
    assert isinstance(uploaded, StreamedUploadedFile)
    return uploaded.received
