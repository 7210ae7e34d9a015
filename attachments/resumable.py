"""
Resumable uploads: the tus 1.0 protocol (core, creation,
creation-with-upload, termination, checksum, expiration) beside the
multipart endpoint, at `/api/uploads/{session_id}/tus/`.

The bytes go straight into the session's staging directory, under the
attachment id they will have, and are recorded, once the last one arrives,
through the same service as a multipart upload (`attachments.uploads`):
same id, scanners, quotas, manifest entry, row and event.

- The offset lives in the database, the bytes on disk: a PATCH may reach
  any worker, and an interrupted PATCH keeps every byte it wrote. A long
  PATCH also moves the offset each time it renews its lease (fsync'd
  first), so a server killed mid-PATCH loses at most the bytes of the last
  third of a lease.
- A PATCH that does not end the upload is answered once its bytes are
  written, and fsync'd just after, while the client sends the next one
  (`_Syncs`): the fsync that every PATCH would otherwise wait for costs a
  large upload in 8 MiB chunks a fifth of its speed. Written bytes live in
  the kernel's page cache until then, which every process of the same boot
  sees, a killed worker included; so the row keeps two offsets, the
  accepted one and the synced one, and the boot whose page cache holds the
  bytes between them. On that boot the accepted offset stands; after a
  reboot (or on another host, once the writer's host has had a lease's
  time to sync them) the upload falls back to the synced one (`_settle`).
  The last PATCH is fsync'd before its answer: a complete upload is
  recorded, and recorded means durable.
- One PATCH writes an upload at a time, whichever worker or host it
  reaches: it leases the upload's row with a conditional UPDATE, which also
  checks the offset (one round trip), and another PATCH meanwhile gets 423.
  The lease lives in the database, is renewed while bytes flow, and frees
  itself `ATTACHMENTS_TUS_LEASE` seconds after a holder died (`PatchWriter`
  says how its expiry is bounded); a worker on the holder's machine frees
  it at once when the holder died (`attachments.holders`). Recording a
  finished upload also takes the staging directory's `flock`, as multipart
  uploads do, for reconciliation.
- Whole aligned buffers are written around the page cache (O_DIRECT), so
  the fsync each PATCH needs before its 204 has little left to flush.
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
import contextlib
import errno
import functools
import hashlib
import logging
import math
import mmap
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from datetime import timedelta
from typing import Any

from django.db import close_old_connections, connection
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from django.utils.http import http_date
from rest_framework import status

from . import holders, paths
from .conf import conf
from .exceptions import ApiError, InsufficientStorage
from .identifiers import new_attachment_id
from .manifest import make_directories, sync_directory
from .mime import SNIFF_BYTES
from .models import Attachment, ResumableUpload, Session
from .quotas import upload_allowance
from .receiving import PARALLEL_HASH_MIN_BYTES, ReceivedFile, hash_workers, is_disk_full

logger = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
CHECKSUMS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1, "md5": hashlib.md5}
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
# Digests kept between PATCHes, per process.
_KEPT_DIGESTS = 1024
# Reads of a resumed upload's bytes, to hash them again.
_REHASH_BYTES = 4 << 20
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)
# O_DIRECT needs memory, file offset and length aligned to the device's block
# size, at most a page on common hardware; mmap buffers start on a page.
_DIRECT_ALIGN = mmap.PAGESIZE
# Syncs a process lets wait behind their PATCHes' answers; past it a PATCH
# syncs before it answers, so a disk slower than the network cannot pile
# up open files and unsynced bytes without bound.
_MAX_PENDING_SYNCS = 64


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
    """
    423: another request holds the upload's lease. `retry_after` (whole
    seconds, also the Retry-After header) is when that lease lapses unless
    renewed: a client that resumes after a crash of the server learns how
    long the dead PATCH's lease still stands rather than guessing.
    """

    status_code = 423
    default_detail = "Another request is writing this upload; retry when it is done."
    default_code = "upload_locked"

    def __init__(self, detail: str | None = None, retry_after: int = 1) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


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


class _Syncs:
    """
    The fsyncs of PATCHes answered before their bytes were synced, run on
    threads of their own just after the answer; each then moves its
    upload's synced offset. A sync that fails (EIO; a full disk found by
    delayed allocation) takes the upload back to its synced offset, so the
    client sends again what may be lost rather than a file with a hole
    being recorded.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tus-fsync")
        self._pending: set[Future[None]] = set()
        self._mutex = threading.Lock()

    def has_room(self) -> bool:
        with self._mutex:
            return len(self._pending) < _MAX_PENDING_SYNCS

    def start(self, upload: ResumableUpload, upto: int, fd: int) -> None:
        """Sync `fd` (which this takes over) and then mark the upload synced up to `upto`."""
        try:
            future = self._pool.submit(self._sync, upload.pk, upload.upload_id, upto, fd)
        except RuntimeError:  # the interpreter is shutting down: sync now
            self._sync(upload.pk, upload.upload_id, upto, fd)
            return
        with self._mutex:
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._mutex:
            self._pending.discard(future)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the syncs started so far; whether they all ended."""
        with self._mutex:
            pending = set(self._pending)
        return not wait_for_futures(pending, timeout).not_done

    @staticmethod
    def _sync(pk: int, upload_id: str, upto: int, fd: int) -> None:
        try:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            logger.exception(
                "Syncing upload %s up to %d failed: it resumes from its synced offset.",
                upload_id,
                upto,
            )
            _digests.forget(upload_id)
            behind = ResumableUpload.objects.filter(pk=pk, synced_offset__lt=upto, offset__gte=upto)
            try:
                behind.update(offset=F("synced_offset"), unsynced_on="")
            except Exception:  # noqa: BLE001 (logged; HEAD after a reboot still settles it)
                logger.exception("Moving upload %s back to its synced offset failed", upload_id)
            finally:
                close_old_connections()
            return
        try:
            _run("synced", [upto, pk, upto, upto], lazy=True)
        except Exception:  # noqa: BLE001 (only a reboot before the next sync would miss it)
            logger.exception("Marking upload %s synced up to %d failed", upload_id, upto)
        finally:
            close_old_connections()


_syncs = _Syncs()


def wait_for_syncs(timeout: float | None = None) -> bool:
    """
    Wait until the bytes of every PATCH this process answered so far are
    fsync'd and marked so; whether they all were within `timeout`.
    """
    return _syncs.wait(timeout)


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
        # A PATCH fsyncs the file's bytes, not the names that lead to them:
        # those are made durable here, before the 201 hands out the URL.
        make_directories(upload.directory)
        with open(upload.file_path, "xb"):
            pass
        sync_directory(upload.directory)
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
    _settle(upload)
    return upload


def _unsynced_elsewhere(upload: ResumableUpload) -> bool:
    """Whether bytes below the upload's offset are only in another boot's page cache."""
    return upload.synced_offset < upload.offset and upload.unsynced_on != holders.this_boot()


def _last_moved(upload: ResumableUpload) -> Any:
    # Each move of the offset sets the expiry TUS_EXPIRY after it.
    return upload.expires_at - timedelta(seconds=conf.TUS_EXPIRY)


def _settle(upload: ResumableUpload) -> None:
    """
    Move the offset back to the synced one when the bytes past it were
    only in the page cache of a boot that is gone: after a reboot, or when
    another host wrote them and has not synced them within a lease (it
    would have, alive, in milliseconds). Until then a PATCH reaching this
    host is told to retry (`_refusal`).
    """
    if not _unsynced_elsewhere(upload):
        return
    now = timezone.now()
    if now - _last_moved(upload) < _lease_span():
        return
    settled = (
        ResumableUpload.objects.filter(
            pk=upload.pk, offset=upload.offset, unsynced_on=upload.unsynced_on
        )
        .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now))
        .update(offset=F("synced_offset"), unsynced_on="")
    )
    if settled:
        logger.warning(
            "Upload %s resumes at its synced offset %d, not %d: the bytes between were not "
            "synced by the boot that wrote them (%s).",
            upload.upload_id,
            upload.synced_offset,
            upload.offset,
            upload.unsynced_on,
        )
        upload.offset, upload.unsynced_on = upload.synced_offset, ""


def response_headers(upload: ResumableUpload) -> dict[str, str]:
    """The headers that tell a client where an upload stands (HEAD, PATCH, creation)."""
    headers = {
        "Tus-Resumable": TUS_VERSION,
        "Upload-Offset": str(upload.offset),
        "Upload-Length": str(upload.length),
        "Upload-Expires": http_date(upload.expires_at.timestamp()),
        "Cache-Control": "no-store",
    }
    if upload.offset == upload.length:
        # Not part of tus: where the finished upload can be found.
        headers["Attachment-Id"] = upload.attachment_id
    return headers


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


def _set_direct(fd: int, enabled: bool) -> bool:
    """Turn O_DIRECT on or off for `fd`; whether it is now on."""
    import fcntl  # POSIX only, and only reached where os.O_DIRECT exists

    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, (flags | _O_DIRECT) if enabled else (flags & ~_O_DIRECT))
    except OSError:
        if enabled:
            return False  # e.g. tmpfs before Linux 6.6, some FUSE filesystems
        raise
    return enabled


class _Appender:
    """
    Appends to an upload's file from `start`. Whole aligned buffers go
    around the page cache (O_DIRECT), as multipart uploads do: the bytes are
    on their way to the device while the body still arrives, so the fsync
    that must precede the acknowledgement has almost nothing left to flush.
    A head up to the first block boundary (a PATCH that starts unaligned)
    and the tail of the PATCH are ordinary writes.
    """

    def __init__(self, path: Any, start: int, direct_io: bool) -> None:
        self.fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            os.ftruncate(self.fd, start)  # bytes past the offset were never acknowledged
            os.lseek(self.fd, start, os.SEEK_SET)
        except BaseException:
            os.close(self.fd)
            raise
        self.position = start
        self._direct = False
        self._want_direct = bool(_O_DIRECT) and direct_io
        size = -(-max(conf.UPLOAD_BUFFER_BYTES, 1) // _DIRECT_ALIGN) * _DIRECT_ALIGN
        self._buffer = mmap.mmap(-1, size) if self._want_direct else None
        self._filled = 0

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        if self._buffer is None:
            self._write_all(view)
            return
        if not self._direct and self._filled == 0:
            head = -self.position % _DIRECT_ALIGN
            if head:
                # Up to the first block boundary, through the page cache.
                self._write_all(view[:head])
                view = view[head:]
        buffer = self._buffer
        while view:
            taken = min(len(view), len(buffer) - self._filled)
            buffer[self._filled : self._filled + taken] = view[:taken]
            self._filled += taken
            view = view[taken:]
            if self._filled == len(buffer):
                if not self._direct and self._want_direct:
                    self._direct = self._want_direct = _set_direct(self.fd, True)
                self._write_buffer()

    def _write_all(self, view: memoryview) -> None:
        while view:
            written = os.write(self.fd, view)
            self.position += written
            view = view[written:]

    def push(self) -> None:
        """
        Write the whole blocks the buffer holds now, around the page cache,
        and keep the rest for the next write: near the end of a PATCH, so
        that the last piece does not find a buffer's worth still to write.
        """
        if self._buffer is None or not self._direct:
            return
        whole = self._filled - self._filled % _DIRECT_ALIGN
        if not whole:
            return
        rest = self._filled - whole
        self._write_buffer(whole)
        if rest:
            self._buffer[:rest] = self._buffer[whole : whole + rest]
        self._filled = rest

    def _write_buffer(self, length: int | None = None) -> None:
        assert self._buffer is not None
        pending = memoryview(self._buffer)[: self._filled if length is None else length]
        try:
            while pending:
                try:
                    written = os.write(self.fd, pending)
                except OSError as exc:
                    # The filesystem took O_DIRECT but wants another alignment.
                    if not (self._direct and exc.errno == errno.EINVAL):
                        raise
                    self._direct = self._want_direct = _set_direct(self.fd, False)
                    continue
                self.position += written
                pending = pending[written:]
        finally:
            pending.release()
        self._filled = 0

    def flush(self) -> None:
        """Write what the buffer holds (a tail seldom a whole number of blocks)."""
        if self._filled:
            if self._direct:
                self._direct = _set_direct(self.fd, False)
            self._write_buffer()

    def truncate(self, size: int) -> None:
        self._filled = 0
        os.ftruncate(self.fd, size)
        self.position = size

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None


_FULL_DISK_DURING_PATCH = (
    "The server's storage is full. The bytes that reached it are kept: "
    "ask HEAD for the offset, and resume from there later."
)


def _lease_span() -> timedelta:
    return timedelta(seconds=conf.TUS_LEASE)


def _statement(kind: str, lazy: bool = False) -> tuple[str, list[Any]]:
    """
    The SQL of `kind` for this connection's database, and the fields it
    returns. `lazy`: its commit need not wait for the disk (what
    `_without_sync` says why of), which on PostgreSQL the statement itself
    asks for, in its own transaction only: inside another one it would make
    that one's commit lazy too.
    """
    lazy = lazy and connection.vendor == "postgresql" and connection.get_autocommit()
    return _statement_for(connection.vendor, kind, lazy)


# A PATCH's statements (take the lease, move the offset and free it, mark
# its bytes synced) are written once per database vendor, not built by the
# ORM per request: building them cost more than running them.
@functools.cache
def _statement_for(vendor: str, kind: str, lazy: bool = False) -> tuple[str, list[Any]]:
    meta = ResumableUpload._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    # PostgreSQL: synchronous_commit off until this statement's transaction
    # ends, so its COMMIT returns without waiting for the WAL's flush (a
    # crash may lose it, never corrupt it). Under a disk busy with the
    # uploads' bytes a flush waited for took 3-4 ms, a lazy one 0.1 ms.
    where = (
        "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS lazy_commit WHERE"
        if lazy
        else "WHERE"
    )

    def column(name: str) -> str:
        return quote(meta.get_field(name).column)

    if kind == "synced":
        # Forward only, and never past the offset (one taken back to the synced one).
        synced = column("synced_offset")
        sql = (
            f"UPDATE {table} SET {synced} = %s {where} {quote(meta.pk.column)} = %s "
            f"AND {synced} < %s AND {column('offset')} >= %s"
        )
        return sql, []
    if kind == "move":
        # The synced offset only grows: a sync that ended meanwhile may have moved it.
        greatest = "GREATEST" if vendor == "postgresql" else "MAX"
        synced = column("synced_offset")
        sql = (
            f"UPDATE {table} SET {column('offset')} = %s, "
            f"{synced} = {greatest}({synced}, %s), {column('unsynced_on')} = %s, "
            f"{column('expires_at')} = %s, "
            f"{column('lease_token')} = %s, {column('lease_expires_at')} = %s "
            f"{where} {quote(meta.pk.column)} = %s AND {column('lease_token')} = %s "
            f"AND {column('offset')} = %s"
        )
        return sql, []
    conditions = [
        f"{column('session')} = %s",
        f"{column('upload_id')} = %s",
        f"{column('expires_at')} > %s",
        f"({column('lease_expires_at')} IS NULL OR {column('lease_expires_at')} <= %s)",
    ]
    if kind == "take_at_offset":
        conditions.append(f"{column('offset')} = %s")
        conditions.append(f"({column('offset')} < {column('length')} OR {column('length')} = 0)")
        # Bytes past the synced offset count only on the boot whose page cache holds them.
        conditions.append(
            f"({column('synced_offset')} >= {column('offset')} OR {column('unsynced_on')} = %s)"
        )
    fields = list(meta.concrete_fields)
    sql = (
        f"UPDATE {table} SET {column('lease_token')} = %s, "
        f"{column('lease_expires_at')} = %s, {column('lease_holder')} = %s "
        f"{where} {' AND '.join(conditions)} "
        f"RETURNING {', '.join(quote(field.column) for field in fields)}"
    )
    return sql, fields


def _run(kind: str, params: list[Any], lazy: bool = False) -> tuple[list[Any], int]:
    """
    Run the statement of `kind`: the rows it returns and how many it
    changed. `lazy`: its commit does not wait for the disk, on either
    database (SQLite: `_without_sync`; PostgreSQL: the statement itself).
    """
    sql, fields = _statement(kind, lazy)
    with connection.cursor() as cursor, _without_sync(cursor) if lazy else contextlib.nullcontext():
        cursor.execute(sql, params)
        # Read before `_without_sync` runs its PRAGMA on the same cursor.
        return (cursor.fetchall() if fields else []), cursor.rowcount


@contextlib.contextmanager
def _without_sync(cursor: Any) -> Iterator[None]:
    """
    On SQLite (WAL, synchronous=FULL), the statements inside commit without
    the WAL's fsync (synchronous=NORMAL): for what only matters while this
    host runs, or may be lost with the host. A lease: a crash of the host
    that loses it also ends the PATCH that held it. An offset over bytes
    not yet synced, and the synced offset itself: a power loss that takes
    the commit leaves an earlier offset, over bytes that are there. The
    last byte's offset move is a FULL commit, and syncs the WAL up to it.
    Elsewhere, and inside a transaction, a no-op: on PostgreSQL the same
    statements ask for it themselves (`_run(kind, params, lazy=True)`),
    where a crash of the database alone may lose them too, to the same effect.
    """
    if connection.vendor != "sqlite" or not connection.get_autocommit():
        yield
        return
    cursor.execute("PRAGMA synchronous")
    (level,) = cursor.fetchone()
    if int(level) <= 1:  # NORMAL or OFF already
        yield
        return
    cursor.execute("PRAGMA synchronous=NORMAL")
    try:
        yield
    finally:
        cursor.execute(f"PRAGMA synchronous={int(level)}")


def _take_lease(
    session: Session, upload_id: str, offset: int | None, token: str
) -> ResumableUpload | None:
    """
    One conditional UPDATE: the upload, now leased to `token`, if it exists,
    has not expired, is free (no lease, or one past its expiry, or one whose
    holder died on this machine) and, with `offset`, is at that offset and
    not complete; else None. On PostgreSQL and SQLite both, the row is
    returned by the same statement (RETURNING), so a PATCH starts with one
    round trip to the database.
    """
    kind = "take" if offset is None else "take_at_offset"
    fields = _statement(kind)[1]
    adapt = connection.ops.adapt_datetimefield_value

    def take() -> list[Any]:
        now = timezone.now()
        params: list[Any] = [token, adapt(now + _lease_span()), holders.this_process()]
        params += [session.pk, upload_id, adapt(now), adapt(now)]
        if offset is not None:
            params += [offset, holders.this_boot() or "-"]
        return _run(kind, params, lazy=True)[0]

    rows = take()
    if not rows and _free_lease_of_dead_holder(session, upload_id):
        rows = take()
    if not rows:
        return None
    values = {}
    for field, value in zip(fields, rows[0], strict=True):
        # As the ORM reads a column: the backend's converters (SQLite's datetimes), the field's.
        col = field.get_col(ResumableUpload._meta.db_table)
        for converter in connection.ops.get_db_converters(col) + field.get_db_converters(
            connection
        ):
            value = converter(value, col, connection)
        values[field.attname] = value
    upload = ResumableUpload(**values)
    upload._state.adding, upload._state.db = False, connection.alias
    upload.session = session
    return upload


def _free_lease_of_dead_holder(session: Session, upload_id: str) -> bool:
    """
    Free the upload's lease if its holder died on this machine (a worker
    killed mid-PATCH and restarted, say), rather than make the client wait
    until it lapses; whether it did. The slow path of a refused lease.
    """
    held = (
        ResumableUpload.objects.filter(session=session, upload_id=upload_id)
        .exclude(lease_token="")
        .values_list("lease_token", "lease_holder")
        .first()
    )
    if held is None or not holders.has_died(held[1]):
        return False
    freed = ResumableUpload.objects.filter(
        session=session, upload_id=upload_id, lease_token=held[0]
    ).update(lease_token="", lease_expires_at=None, lease_holder="")
    if freed:
        logger.info("Freed the lease on upload %s: its holder (%s) died.", upload_id, held[1])
    return bool(freed)


def _release_lease(upload: ResumableUpload, token: str) -> None:
    ResumableUpload.objects.filter(pk=upload.pk, lease_token=token).update(
        lease_token="", lease_expires_at=None
    )


def _refusal(session: Session, upload_id: str, offset: int) -> ApiError:
    """Why an upload could not be leased for a PATCH at `offset` (the slow, rare path)."""
    upload = find_upload(session, upload_id)  # 404, or 410 (and removed)
    if upload.offset == upload.length and upload.length:
        return OffsetMismatch("Every byte of this upload arrived already.", offset=upload.offset)
    now = timezone.now()
    if upload.lease_expires_at is not None and upload.lease_expires_at > now:
        remaining = (upload.lease_expires_at - now).total_seconds()
        return UploadLocked(retry_after=max(1, math.ceil(remaining)))
    if offset != upload.offset:
        return OffsetMismatch(
            f"Upload-Offset is {offset}, the upload is at {upload.offset}.", offset=upload.offset
        )
    if _unsynced_elsewhere(upload):
        # A live host syncs them in milliseconds; a lost one is given up on a lease after.
        return UploadLocked(
            "The bytes before this offset are still being synced by the host that took them."
        )
    return UploadLocked()  # freed or moved in between: the client retries


def _rehash(path: Any, upto: int) -> Any:
    """
    The sha256 of the first `upto` bytes of the file at `path` (a digest
    this process does not hold). Each buffer is hashed on another thread
    while the next is read: a resume waits for the slower of the two, not
    both.
    """
    digest = hashlib.sha256()
    buffers = (bytearray(_REHASH_BYTES), bytearray(_REHASH_BYTES))
    hashing = None
    with open(path, "rb", buffering=0) as source:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(source.fileno(), 0, upto, os.POSIX_FADV_SEQUENTIAL)
        left, turn = upto, 0
        while left:
            # The other buffer may still be hashed; this one no longer is.
            view = memoryview(buffers[turn])[: min(left, _REHASH_BYTES)]
            read = source.readinto(view)
            if not read:
                break
            if hashing is not None:
                hashing.result()
            hashing = hash_workers.submit(digest.update, view[:read])
            left -= read
            turn ^= 1
        if hashing is not None:
            hashing.result()
    return digest


def _digest_upto(upload: ResumableUpload, offset: int) -> Any:
    """The sha256 of the upload's first `offset` bytes: kept by this process, or re-hashed."""
    return _digests.take(upload.upload_id, offset) or _rehash(upload.file_path, offset)


class PatchWriter:
    """
    Appends one PATCH's bytes to an upload. Open it (which leases the upload
    and checks the offset, in one UPDATE), `write()` the body's chunks, then
    `close()` with whether the whole body arrived.

    The lease is the PATCH's exclusivity, wherever the other PATCH runs: a
    row in the database, taken with a conditional UPDATE and held for
    `ATTACHMENTS_TUS_LEASE` seconds. While bytes flow the holder renews it
    (`renewal_due`, `renew()`) every third of that; it never writes or
    truncates past two thirds of it without a renewal, so another worker,
    even on a host whose clock is up to a third of the lease ahead, only
    takes over once this one has stopped. A holder that died (kill -9, a
    lost host) frees the upload at most one lease after its last renewal.
    """

    def __init__(
        self,
        upload: ResumableUpload,
        offset: int,
        checksum: tuple[str, bytes] | None,
        leased: tuple[str, float] | None = None,
    ) -> None:
        """`leased`: the lease's token and when it was asked for (`time.monotonic()`)."""
        self.token, self._lease_taken = leased or (None, time.monotonic())
        # Read once: the lease is checked before every write of the body.
        self._lease_seconds: float = conf.TUS_LEASE
        self._file: _Appender | None = None
        if leased is None:
            token = secrets.token_hex(16)
            taken = _take_lease(upload.session, upload.upload_id, offset, token)
            if taken is None:
                raise _refusal(upload.session, upload.upload_id, offset)
            self.token, upload = token, taken
        self.upload = upload
        try:
            self.start = upload.offset
            self._file = _Appender(upload.file_path, self.start, conf.DIRECT_IO)
            self.digest = _digest_upto(upload, self.start)
            self.chunk_digest = CHECKSUMS[checksum[0]]() if checksum else None
            self.expected_chunk_digest = checksum[1] if checksum else None
            self.written = 0
        except FileNotFoundError:
            self.release()
            raise UploadNotFound() from None
        except BaseException:
            self.release()
            raise

    @classmethod
    def open(
        cls, session: Session, upload_id: str, offset: int, checksum: tuple[str, bytes] | None
    ) -> PatchWriter:
        """Lease the upload for a PATCH at `offset`, or raise why not (404, 409, 410, 423)."""
        token, asked = secrets.token_hex(16), time.monotonic()
        upload = _take_lease(session, upload_id, offset, token)
        if upload is None:
            raise _refusal(session, upload_id, offset)
        return cls(upload, offset, checksum, leased=(token, asked))

    # The lease: renewed from a thread that may use the database, checked before each write.

    @property
    def renewal_due(self) -> bool:
        return time.monotonic() - self._lease_taken >= self._lease_seconds / 3

    def renew(self) -> None:
        """
        Extend the lease; UploadLocked if another request took it over meanwhile.

        A PATCH without a chunk checksum also checkpoints here: what it has
        written so far is fsync'd and the offset moved to it in the same
        UPDATE. Without that, a client that sends a whole file in one PATCH
        (tus-js-client's default) would find, after the server was killed,
        the offset where that PATCH began. A checksummed chunk is kept
        whole or not at all, so it moves the offset only when it ends. The
        last byte never moves it here: a complete offset means recorded.
        """
        asked = time.monotonic()
        now = timezone.now()
        fields: dict[str, Any] = {"lease_expires_at": now + _lease_span()}
        written = self._file.position if self._file is not None else self.upload.offset
        checkpoint = self.chunk_digest is None and self.upload.offset < written < self.upload.length
        if checkpoint:
            assert self._file is not None
            os.fsync(self._file.fd)  # the bytes before the offset that says they are there
            fields.update(
                offset=written,
                synced_offset=written,
                unsynced_on="",
                expires_at=now + timedelta(seconds=conf.TUS_EXPIRY),
            )
        renewed = ResumableUpload.objects.filter(
            pk=self.upload.pk, lease_token=self.token, offset=self.upload.offset
        ).update(**fields)
        if not renewed:
            self.token = None
            raise UploadLocked("Another request took this upload over; resume from its offset.")
        if checkpoint:
            self.upload.offset, self.upload.expires_at = written, fields["expires_at"]
            self.upload.synced_offset, self.upload.unsynced_on = written, ""
        self._lease_taken = asked

    def _check_lease(self) -> None:
        if time.monotonic() - self._lease_taken >= self._lease_seconds * 2 / 3:
            raise UploadLocked("This request's hold on the upload lapsed; resume from HEAD.")

    @property
    def offset(self) -> int:
        return self.start + self.written

    def write(self, data: bytes | memoryview) -> None:
        """Append `data` (blocking; it must not change until this returns). No database use."""
        self.write_chunks((data,))

    def write_chunks(self, chunks: Sequence[bytes | memoryview], push: bool = False) -> None:
        """
        Append `chunks`, in order, as `write()` does: a body's pieces as the
        server received them, without joining them into one buffer first
        (each is copied once, into the aligned buffer of the file). With
        `push`, the whole blocks buffered are written now (`_Appender.push`).
        """
        size = sum(len(chunk) for chunk in chunks)
        if self.offset + size > self.upload.length:
            raise InvalidTusHeader(
                "Upload-Length", "The body goes past the upload's declared Upload-Length."
            )
        self._check_lease()
        assert self._file is not None
        # sha256 and write() both release the GIL: large chunks are hashed on
        # another thread while this one writes (as multipart uploads are).
        hashed = None
        if size >= PARALLEL_HASH_MIN_BYTES:
            hashed = hash_workers.submit(self._hash, chunks)
        failed = True
        try:
            for chunk in chunks:
                self._file.write(chunk)
            failed = False
        except OSError as exc:
            if is_disk_full(exc):
                raise InsufficientStorage(_FULL_DISK_DURING_PATCH) from exc
            raise
        finally:
            if hashed is not None:
                hashed.exception()  # wait: the caller may reuse the buffers
            if failed:
                # The file holds less than was hashed (a buffer that could
                # not be written is dropped): `close` keeps what reached it.
                self.digest = None
        if hashed is None:
            self._hash(chunks)
        else:
            hashed.result()
        self.written += size
        if push:
            self._file.push()

    def _hash(self, chunks: Sequence[bytes | memoryview]) -> None:
        for chunk in chunks:
            self.digest.update(chunk)
            if self.chunk_digest is not None:
                self.chunk_digest.update(chunk)

    def close(self, whole_body: bool) -> int:
        """
        Write what is buffered and move the offset; the new offset. With a
        checksum, a chunk that did not arrive whole or does not match is
        discarded (ChecksumMismatch for a whole one). The one database
        round trip moves the offset and ends the lease together, unless the
        upload is complete: then the lease is held until it is recorded.

        The commit point is that UPDATE. The last byte's PATCH fsyncs the
        file before it; any other PATCH leaves the fsync to `_Syncs`, after
        its answer, and marks its bytes as in this boot's page cache.
        """
        assert self._file is not None
        try:
            keep = self.written
            mismatch = False
            if self.chunk_digest is not None:
                if not whole_body:
                    keep = 0
                elif self.chunk_digest.digest() != self.expected_chunk_digest:
                    keep, mismatch = 0, True
            if self.renewal_due:
                self.renew()  # before touching the file again
            self._check_lease()
            full = None
            if keep:
                try:
                    self._file.flush()
                except OSError as exc:
                    if not is_disk_full(exc):
                        raise
                    full, self.digest = exc, None
                if self.digest is None:
                    # A write failed (a full disk): the bytes that reached
                    # the file are kept, and hashed again by the next PATCH;
                    # a checksummed chunk is kept whole or not at all.
                    keep = 0 if self.chunk_digest is not None else self._file.position - self.start
            if keep != self._file.position - self.start:
                self._file.truncate(self.start + keep)
                self.digest = None
            new_offset = self.start + keep
            complete = new_offset == self.upload.length
            boot = holders.this_boot()
            defer = bool(boot) and not complete and new_offset > self.upload.synced_offset
            if defer and not _syncs.has_room():
                defer = False
            if not defer and new_offset > self.upload.synced_offset:
                os.fsync(self._file.fd)
            synced = self.upload.synced_offset if defer else new_offset
            self._move(new_offset, synced, boot if defer else "", complete)
            if defer:
                _syncs.start(self.upload, new_offset, os.dup(self._file.fd))
            if self.digest is not None:
                _digests.keep(self.upload.upload_id, new_offset, self.digest)
            if mismatch:
                raise ChecksumMismatch()
            if full is not None and whole_body:
                raise InsufficientStorage(_FULL_DISK_DURING_PATCH) from full
            return new_offset
        finally:
            self._file.close()

    def _move(self, offset: int, synced: int, unsynced_on: str, complete: bool) -> None:
        """The commit point: the offset moved and the lease ended (kept if `complete`)."""
        now = timezone.now()
        expires_at = now + timedelta(seconds=conf.TUS_EXPIRY)
        adapt = connection.ops.adapt_datetimefield_value
        _rows, moved = _run(
            "move",
            [
                offset,
                synced,
                unsynced_on,
                adapt(expires_at),
                self.token if complete else "",
                adapt(now + _lease_span()) if complete else None,
                self.upload.pk,
                self.token,
                self.upload.offset,
            ],
            # Bytes a power loss would take anyway: the offset that names
            # them need not survive one either.
            lazy=bool(unsynced_on),
        )
        if not moved:
            self.token = None
            raise UploadLocked("Another request took this upload over; resume from its offset.")
        if not complete:
            self.token = None  # released by the same UPDATE
        upload = self.upload
        upload.offset, upload.expires_at, upload.unsynced_on = offset, expires_at, unsynced_on
        upload.synced_offset = max(upload.synced_offset, synced)

    @property
    def complete(self) -> bool:
        return self.upload.offset == self.upload.length

    def finish_upload(self) -> Attachment:
        """Record the complete upload as an attachment (releases the lease either way)."""
        # Recording wants the staging directory's flock (reconciliation's sign of a live upload).
        lock_fd = paths.lock_directory(self.upload.directory)
        try:
            return _record(self.upload, lock_fd if lock_fd is not None else -1)
        except BaseException:
            self.token = None  # the upload is gone, its lease with it
            raise

    def release(self) -> None:
        """Let go of the file and, if still held, the lease (the offset stays where it was)."""
        if self._file is not None:
            self._file.close()
        if self.token is not None:
            token, self.token = self.token, None
            _release_lease(self.upload, token)


def _record(upload: ResumableUpload, lock_fd: int) -> Attachment:
    """
    Record a complete upload, whose lease and staging `flock` (`lock_fd`)
    the caller holds, exactly as a multipart upload is recorded. Refused
    (quota, scanner) or failed, its bytes are gone, and so is the upload.
    """
    from .uploads import accept_upload

    try:
        digest = _digest_upto(upload, upload.offset)
        with open(upload.file_path, "rb") as source:
            head = source.read(SNIFF_BYTES)
    except BaseException:
        if lock_fd >= 0:
            os.close(lock_fd)
        raise
    received = ReceivedFile(
        attachment_id=upload.attachment_id,
        name=upload.name,
        filename=upload.filename,
        path=upload.file_path,
        directory=upload.directory,
        size=upload.length,
        sha256=digest.hexdigest(),
        head=head,
        lock_fd=lock_fd,
    )
    try:
        attachment = accept_upload(upload.session, received)
    except BaseException:
        ResumableUpload.objects.filter(pk=upload.pk).delete()
        raise
    # The row stays until it expires, so that a client that lost the last
    # answer learns from HEAD that every byte arrived.
    _digests.forget(upload.upload_id)
    return attachment


def record_interrupted(repair: bool = True) -> list[str]:
    """
    Uploads whose last byte was acknowledged but whose recording a crash cut
    short (every byte in, no attachment): with `repair`, recorded now, as
    their last PATCH would have. Each is leased first, and left alone if a
    live worker holds it or is recording it. Their attachment ids.
    """
    recorded = Attachment.objects.filter(attachment_id=OuterRef("attachment_id"))
    unrecorded = (
        ResumableUpload.objects.select_related("session")
        .filter(offset=F("length"), expires_at__gt=timezone.now(), session__purged_at=None)
        .exclude(Exists(recorded))
    )
    found = []
    for upload in unrecorded:
        if not repair:
            found.append(upload.attachment_id)
            continue
        token = secrets.token_hex(16)
        taken = _take_lease(upload.session, upload.upload_id, None, token)
        if taken is None:
            continue  # a live worker holds it
        lock_fd = None
        try:
            lock_fd = paths.lock_directory(taken.directory, blocking=False)
            if (
                lock_fd is None
                or Attachment.objects.filter(attachment_id=taken.attachment_id).exists()
            ):
                continue  # recording now, or recorded since the query
            fd, lock_fd = lock_fd, None  # the recording closes it
            _record(taken, fd)
            found.append(taken.attachment_id)
        except FileNotFoundError:
            continue  # recorded (the staging directory renamed) since the query
        except Exception:  # noqa: BLE001 (logged; the next upload is still recorded)
            logger.exception("Recording the interrupted upload %s failed", upload.upload_id)
        finally:
            if lock_fd is not None:
                os.close(lock_fd)
            _release_lease(taken, token)
    return found


def terminate_unless_busy(session: Session, upload: ResumableUpload) -> None:
    """Termination: remove the upload unless a request is writing or recording it (423)."""
    token = secrets.token_hex(16)
    if _take_lease(session, upload.upload_id, None, token) is None:
        find_upload(session, upload.upload_id)  # gone or expired meanwhile: 404 / 410
        raise UploadLocked()
    lock = paths.lock_directory(upload.directory, blocking=False)
    if lock is None:  # a request of this host is recording it
        _release_lease(upload, token)
        raise UploadLocked()
    try:
        terminate(upload)
    finally:
        os.close(lock)


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
    return PatchWriter.open(session, upload_id, offset, checksum)


def finish_patch(writer: PatchWriter, whole_body: bool) -> ResumableUpload:
    """Close a PATCH's writer and, if that was the last byte, record the attachment."""
    try:
        writer.close(whole_body)
        if whole_body and writer.complete:
            writer.finish_upload()
    finally:
        writer.release()
    return writer.upload
