"""
Resumable uploads: the tus 1.0 protocol (core, creation,
creation-with-upload, termination, checksum, expiration) beside the
multipart endpoint, at `/api/uploads/{session_id}/tus/`.

The bytes go straight into the session's staging directory, under the
attachment id they will have, and are recorded, once the last one arrives,
through the same service as a multipart upload (`attachments.uploads`):
same id, scanners, quotas, manifest entry, row and event.

- The offset lives in the database, the bytes on disk: a PATCH may reach
  any worker, and an interrupted PATCH keeps every byte it wrote (fsync'd
  before the offset moves).
- One PATCH writes an upload at a time: each takes an `flock` on the
  upload's staging directory without waiting, and another PATCH meanwhile
  gets 423. The lock lives in the kernel (shared-volume filesystems carry it
  across machines), dies with its process, and is the same lock that tells
  reconciliation an upload is in use.
- The sha256 of the whole file is computed as the bytes arrive. A digest's
  state cannot be saved portably, so the process keeps it between PATCHes;
  a PATCH that reaches another worker, or one started after a restart,
  first re-hashes what is on disk up to the offset.
- Expired uploads (`ATTACHMENTS_TUS_EXPIRY` after their last byte) are
  refused with 410 and removed by `manage.py purge_sessions` and
  reconciliation.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import os
import secrets
import shutil
import threading
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from rest_framework import status

from . import paths
from .conf import conf
from .exceptions import ApiError, InsufficientStorage
from .identifiers import new_attachment_id
from .mime import SNIFF_BYTES
from .models import Attachment, ResumableUpload, Session
from .quotas import upload_allowance
from .receiving import PARALLEL_HASH_MIN_BYTES, ReceivedFile, hash_workers, is_disk_full

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
CHECKSUMS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1, "md5": hashlib.md5}
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
# Digests kept between PATCHes, per process.
_KEPT_DIGESTS = 1024


class TusVersionMismatch(ApiError):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = f"Send Tus-Resumable: {TUS_VERSION}."
    default_code = "tus_version_unsupported"


class InvalidTusHeader(ApiError):
    default_detail = "A tus header is missing or invalid."
    default_code = "invalid_tus_header"

    def __init__(self, header: str, detail: str) -> None:
        super().__init__(detail, header=header)


class UploadNotFound(ApiError):
    status_code = status.HTTP_404_NOT_FOUND
    default_detail = "No such upload in this session."
    default_code = "upload_not_found"


class UploadExpired(ApiError):
    status_code = status.HTTP_410_GONE
    default_detail = "This upload expired and was removed; start a new one."
    default_code = "upload_expired"


class OffsetMismatch(ApiError):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Upload-Offset does not match the upload's offset."
    default_code = "offset_mismatch"


class UploadLocked(ApiError):
    status_code = 423
    default_detail = "Another request is writing this upload; retry when it is done."
    default_code = "upload_locked"


class ChecksumMismatch(ApiError):
    status_code = 460
    default_detail = "The chunk's checksum does not match; it was discarded."
    default_code = "checksum_mismatch"


class WrongContentType(ApiError):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    default_detail = f"PATCH bodies are sent as {OFFSET_CONTENT_TYPE}."
    default_code = "unsupported_media_type"


class _Digests:
    """Whole-file sha256 states this process holds, by upload id, with the offset each covers."""

    def __init__(self) -> None:
        self._states: collections.OrderedDict[str, tuple[int, Any]] = collections.OrderedDict()
        self._mutex = threading.Lock()

    def take(self, upload_id: str, offset: int) -> Any | None:
        with self._mutex:
            kept = self._states.pop(upload_id, None)
        return kept[1] if kept is not None and kept[0] == offset else None

    def keep(self, upload_id: str, offset: int, digest: Any) -> None:
        with self._mutex:
            self._states[upload_id] = (offset, digest)
            while len(self._states) > _KEPT_DIGESTS:
                self._states.popitem(last=False)

    def forget(self, upload_id: str) -> None:
        with self._mutex:
            self._states.pop(upload_id, None)


_digests = _Digests()


def check_version(value: str | None) -> None:
    if value != TUS_VERSION:
        raise TusVersionMismatch()


def parse_length(header: str, value: str | None) -> int:
    if value is None or not value.isdigit() or len(value) > 20:
        raise InvalidTusHeader(header, f"{header} must be a non-negative whole number.")
    return int(value)


def parse_metadata(value: str | None) -> dict[str, str]:
    """Upload-Metadata: comma-separated `key base64value` pairs."""
    metadata: dict[str, str] = {}
    if not value:
        return metadata
    for pair in value.split(","):
        key, _, encoded = pair.strip().partition(" ")
        if not key:
            continue
        try:
            metadata[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidTusHeader(
                "Upload-Metadata", f"The value of {key!r} is not base64 of UTF-8 text."
            ) from None
    return metadata


def parse_checksum(value: str | None) -> tuple[str, bytes] | None:
    if not value:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm not in CHECKSUMS:
        raise InvalidTusHeader(
            "Upload-Checksum", f"Supported algorithms: {', '.join(sorted(CHECKSUMS))}."
        )
    try:
        return algorithm, base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise InvalidTusHeader("Upload-Checksum", "The checksum is not base64.") from None


def remaining_bytes(session: Session) -> int | None:
    """The largest upload the session takes now (None: no limit)."""
    return upload_allowance(session).max_bytes


def create_upload(session: Session, length: int, metadata: dict[str, str]) -> ResumableUpload:
    """A new, empty upload of `length` bytes; refused at once when it cannot fit."""
    allowance = upload_allowance(session)
    if allowance.max_bytes is not None and length > allowance.max_bytes:
        raise allowance.exceeded()
    client_name = paths.client_file_name(metadata.get("filename") or metadata.get("name") or "")
    client_name = client_name or "upload"
    upload = ResumableUpload(
        upload_id=secrets.token_urlsafe(24),
        session=session,
        attachment_id=new_attachment_id(),
        name=paths.display_name(client_name),
        filename=paths.sanitize_filename(client_name),
        length=length,
        expires_at=timezone.now() + timedelta(seconds=conf.TUS_EXPIRY),
    )
    try:
        upload.directory.mkdir(parents=True)
        with open(upload.file_path, "xb"):
            pass
    except OSError as exc:
        shutil.rmtree(upload.directory, ignore_errors=True)
        if is_disk_full(exc):
            raise InsufficientStorage() from exc
        raise
    upload.save()
    return upload


def find_upload(session: Session, upload_id: str) -> ResumableUpload:
    upload = (
        ResumableUpload.objects.select_related("session")
        .filter(session=session, upload_id=upload_id)
        .first()
    )
    if upload is None:
        raise UploadNotFound()
    if upload.expires_at <= timezone.now():
        terminate(upload)
        raise UploadExpired()
    return upload


def terminate(upload: ResumableUpload) -> None:
    """Remove an unfinished upload and its bytes (termination, expiry)."""
    _digests.forget(upload.upload_id)
    shutil.rmtree(upload.directory, ignore_errors=True)
    ResumableUpload.objects.filter(pk=upload.pk).delete()


def purge_expired(now: Any = None) -> int:
    """Remove every upload past its expiry; how many."""
    expired = ResumableUpload.objects.select_related("session").filter(
        expires_at__lte=now or timezone.now()
    )
    count = 0
    for upload in expired:
        terminate(upload)
        count += 1
    return count


class PatchWriter:
    """
    Appends one PATCH's bytes to an upload. Open it (which takes the
    upload's lock and checks the offset), `write()` the body's chunks, then
    `close()` with whether the whole body arrived.
    """

    def __init__(
        self, upload: ResumableUpload, offset: int, checksum: tuple[str, bytes] | None
    ) -> None:
        self.upload = upload
        if upload.offset == upload.length and upload.length:
            raise OffsetMismatch("Every byte of this upload arrived already.", offset=upload.offset)
        try:
            self.lock_fd = paths.lock_directory(upload.directory, blocking=False)
        except FileNotFoundError:
            raise UploadNotFound() from None
        if self.lock_fd is None:
            raise UploadLocked()
        self._fd = -1
        try:
            upload.refresh_from_db(fields=["offset", "expires_at"])
            if offset != upload.offset:
                raise OffsetMismatch(
                    f"Upload-Offset is {offset}, the upload is at {upload.offset}.",
                    offset=upload.offset,
                )
            self.start = upload.offset
            self._fd = os.open(upload.file_path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
            os.ftruncate(self._fd, self.start)  # bytes past the offset were never acknowledged
            os.lseek(self._fd, self.start, os.SEEK_SET)
            self.digest = _digests.take(upload.upload_id, self.start) or self._rehash(self.start)
            self.chunk_digest = CHECKSUMS[checksum[0]]() if checksum else None
            self.expected_chunk_digest = checksum[1] if checksum else None
            self.written = 0
        except BaseException:
            self.release()
            raise

    def _rehash(self, upto: int) -> Any:
        digest = hashlib.sha256()
        with open(self.upload.file_path, "rb") as source:
            left = upto
            while left:
                chunk = source.read(min(left, 1 << 20))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
        return digest

    @property
    def offset(self) -> int:
        return self.start + self.written

    def write(self, data: bytes | memoryview) -> None:
        if self.offset + len(data) > self.upload.length:
            raise InvalidTusHeader(
                "Upload-Length", "The body goes past the upload's declared Upload-Length."
            )
        # sha256 and write() both release the GIL: large chunks are hashed on
        # another thread while this one writes (as multipart uploads are).
        hashed = (
            hash_workers.submit(self._hash, data) if len(data) >= PARALLEL_HASH_MIN_BYTES else None
        )
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            if is_disk_full(exc):
                raise InsufficientStorage() from exc
            raise
        finally:
            if hashed is not None:
                hashed.exception()  # wait: the caller may reuse the buffer
        if hashed is None:
            self._hash(data)
        else:
            hashed.result()
        self.written += len(data)

    def _hash(self, data: bytes | memoryview) -> None:
        self.digest.update(data)
        if self.chunk_digest is not None:
            self.chunk_digest.update(data)

    def close(self, whole_body: bool) -> int:
        """
        Make the received bytes durable and move the offset; the new offset.
        With a checksum, a chunk that did not arrive whole or does not match
        is discarded (ChecksumMismatch for a whole one).
        """
        try:
            keep = self.written
            mismatch = False
            if self.chunk_digest is not None:
                if not whole_body:
                    keep = 0
                elif self.chunk_digest.digest() != self.expected_chunk_digest:
                    keep, mismatch = 0, True
            if keep != self.written:
                os.ftruncate(self._fd, self.start)
                self.digest = None
            os.fsync(self._fd)
            new_offset = self.start + keep
            with transaction.atomic():
                ResumableUpload.objects.filter(pk=self.upload.pk).update(
                    offset=new_offset,
                    expires_at=timezone.now() + timedelta(seconds=conf.TUS_EXPIRY),
                )
            self.upload.offset = new_offset
            if self.digest is not None:
                _digests.keep(self.upload.upload_id, new_offset, self.digest)
            if mismatch:
                raise ChecksumMismatch()
            return new_offset
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    @property
    def complete(self) -> bool:
        return self.upload.offset == self.upload.length

    def finish_upload(self) -> Attachment:
        """Record the complete upload as an attachment (releases the lock either way)."""
        from .uploads import accept_upload

        upload = self.upload
        digest = _digests.take(upload.upload_id, upload.offset) or self._rehash(upload.offset)
        with open(upload.file_path, "rb") as source:
            head = source.read(SNIFF_BYTES)
        received = ReceivedFile(
            attachment_id=upload.attachment_id,
            name=upload.name,
            filename=upload.filename,
            path=upload.file_path,
            directory=upload.directory,
            size=upload.length,
            sha256=digest.hexdigest(),
            head=head,
            lock_fd=self.lock_fd if self.lock_fd is not None else -1,
        )
        self.lock_fd = None  # the received file owns it now
        try:
            attachment = accept_upload(upload.session, received)
        except BaseException:
            # Refused (quota, scanner) or failed: the bytes are gone, so is the upload.
            ResumableUpload.objects.filter(pk=upload.pk).delete()
            raise
        # The row stays until it expires, so that a client that lost the last
        # answer learns from HEAD that every byte arrived.
        _digests.forget(upload.upload_id)
        return attachment

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def open_patch(session: Session, upload_id: str, headers: Mapping[str, str]) -> PatchWriter:
    """
    Check a PATCH's headers (case-insensitive mapping) and open its writer:
    the one place both the ASGI fast path and the Django view do it.
    """
    check_version(headers.get("tus-resumable"))
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != OFFSET_CONTENT_TYPE:
        raise WrongContentType()
    offset = parse_length("Upload-Offset", headers.get("upload-offset"))
    checksum = parse_checksum(headers.get("upload-checksum"))
    return PatchWriter(find_upload(session, upload_id), offset, checksum)


def finish_patch(writer: PatchWriter, whole_body: bool) -> ResumableUpload:
    """Close a PATCH's writer and, if that was the last byte, record the attachment."""
    try:
        writer.close(whole_body)
        if whole_body and writer.complete:
            writer.finish_upload()
    finally:
        writer.release()
    return writer.upload
