"""
Receiving an upload: bytes go straight to disk, under the session's staging
directory, and are hashed in the same pass; recording the file moves it into
place with one rename. Used by the upload service (`attachments.uploads`) on
both the streaming ASGI path and the Django path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import mmap
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeAlias

from . import paths
from .conf import conf
from .exceptions import InsufficientStorage
from .identifiers import new_attachment_id
from .mime import SNIFF_BYTES

Chunk: TypeAlias = bytes | bytearray | memoryview

# Below this many bytes per write, handing the hashing to another thread costs
# more than it saves.
PARALLEL_HASH_MIN_BYTES = 256 * 1024
# sha256 and write() both release the GIL, so an upload is hashed on one of
# these threads while the caller's thread writes it: a batch takes as long as
# the slower of the two, not both together.
_hashers = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="upload-sha256")

_O_DIRECT: int = getattr(os, "O_DIRECT", 0)
# O_DIRECT needs the memory, the file offset and the length of each write
# aligned to the device's block size, which is at most a page on common
# hardware. Buffers come from mmap, so they start on a page boundary.
_DIRECT_ALIGN = mmap.PAGESIZE


def _hash_chunks(digest: Any, chunks: Sequence[Chunk]) -> None:
    for chunk in chunks:
        digest.update(chunk)


class _UploadFile:
    """
    The file an upload is written to, a buffer at a time.

    Once a file outgrows one buffer, its writes bypass the page cache
    (O_DIRECT) where the OS and filesystem allow it: an upload is written once
    and is seldom read back soon, copying it through the page cache takes
    about as much CPU as hashing it, and the cache would evict pages that
    other requests use. Anything that refuses O_DIRECT gets ordinary writes.
    """

    def __init__(self, path: Path, buffer_bytes: int, direct_io: bool = True) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        self._fd = os.open(path, flags, 0o666)
        size = -(-max(buffer_bytes, 1) // _DIRECT_ALIGN) * _DIRECT_ALIGN
        self._buffer = mmap.mmap(-1, size)
        self._filled = 0
        # None until the first full buffer shows whether O_DIRECT is accepted.
        self._direct: bool | None = None if _O_DIRECT and direct_io else False

    def write(self, chunks: Sequence[Chunk]) -> None:
        for chunk in chunks:
            data = memoryview(chunk).cast("B")
            while data:
                taken = min(len(data), len(self._buffer) - self._filled)
                self._buffer[self._filled : self._filled + taken] = data[:taken]
                self._filled += taken
                data = data[taken:]
                if self._filled == len(self._buffer):
                    if self._direct is None:
                        self._direct = self._set_direct(True)
                    self._write_buffer()

    def close(self, flush: bool, sync: bool = True) -> None:
        """
        With `flush`, write what is left (and with `sync`, fsync); otherwise
        just let go. Idempotent.
        """
        if self._fd < 0:
            return
        try:
            if flush:
                if self._direct:
                    # The tail is seldom a whole number of blocks.
                    self._direct = self._set_direct(False)
                self._write_buffer()
                if sync:
                    os.fsync(self._fd)
        finally:
            fd, self._fd = self._fd, -1
            os.close(fd)
            self._buffer.close()

    def _write_buffer(self) -> None:
        pending = memoryview(self._buffer)[: self._filled]
        try:
            while pending:
                try:
                    written = os.write(self._fd, pending)
                except OSError as exc:
                    # The filesystem took O_DIRECT but wants another alignment,
                    # or a short write left an unaligned remainder.
                    if not (self._direct and exc.errno == errno.EINVAL):
                        raise
                    self._direct = self._set_direct(False)
                    continue
                pending = pending[written:]
        finally:
            pending.release()
        self._filled = 0

    def _set_direct(self, enabled: bool) -> bool:
        """Turn O_DIRECT on or off for the file; whether it is now on."""
        import fcntl  # POSIX only, and only reached where os.O_DIRECT exists

        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        flags = (flags | _O_DIRECT) if enabled else (flags & ~_O_DIRECT)
        try:
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags)
        except OSError:
            if enabled:
                return False  # e.g. tmpfs before Linux 6.6, some FUSE filesystems
            raise
        return enabled


class LimitExceeded(Exception):
    """More bytes arrived than the upload limit allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"Upload exceeds {limit} bytes.")
        self.limit = limit


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL


@dataclasses.dataclass
class ReceivedFile:
    """
    A file fully written under the session's staging directory (fsync'd, or
    to be by `sync()` before it is recorded),
    not yet recorded anywhere. Listings, zips, quotas and the workspace hook
    never see it there. While this process holds it, an exclusive `flock` on
    its staging directory tells reconciliation (`attachments.reconcile`) that
    it is in use; a crash releases the lock, and the leftover is removed.
    """

    attachment_id: str
    name: str  # as the client gave it, for display
    filename: str  # the safe name on disk
    path: Path  # absolute: in the staging directory, then, once published, in its final place
    directory: Path  # the directory holding `path`, removed whole on discard
    size: int
    sha256: str
    head: bytes  # the first bytes, for MIME detection without a re-read
    claimed: bool = False
    lock_fd: int = -1
    synced: bool = True  # False: written, but its fsync is left to `sync()`

    def sync(self) -> None:
        """Make the file's bytes durable (recording does it, beside the manifest's fsync)."""
        if self.synced:
            return
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.synced = True

    def final_directory(self) -> Path:
        """attachments/<attachment_id>, where the file lives once recorded."""
        return (
            self.directory.parent.parent / self.attachment_id if self.is_staged else self.directory
        )

    @property
    def is_staged(self) -> bool:
        return self.directory.parent.name == paths.STAGING_DIRNAME

    def publish(self) -> None:
        """Move the file's directory from staging to its final place (one rename)."""
        if not self.is_staged:
            return
        final = self.final_directory()
        os.rename(self.directory, final)
        self.directory = final
        self.path = final / self.filename

    def unpublish(self) -> None:
        """Undo `publish()`: back to staging, before the commit point."""
        if self.is_staged:
            return
        staged = self.directory.parent / paths.STAGING_DIRNAME / self.attachment_id
        try:
            os.rename(self.directory, staged)
        except OSError:
            return  # gone: nothing to move back
        self.directory = staged
        self.path = staged / self.filename

    def release(self) -> None:
        """Let go of the staging lock: the file is recorded, or gone."""
        if self.lock_fd >= 0:
            fd, self.lock_fd = self.lock_fd, -1
            os.close(fd)

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.release()


class UploadSink:
    """
    Writes one upload into `attachments/.staging/<new id>/<safe name>`,
    hashing as it goes. Either `finish()` returns the `ReceivedFile`, or
    `abort()` removes every trace of it. A full disk raises
    `InsufficientStorage`, with the partial file already removed.
    """

    def __init__(
        self, attachments_path: Path, client_name: str, max_bytes: int | None = None
    ) -> None:
        self.attachment_id = new_attachment_id()
        self.name = paths.display_name(client_name)
        self.filename = paths.sanitize_filename(client_name)
        staging = attachments_path / paths.STAGING_DIRNAME
        self.directory = paths.safe_join(staging, self.attachment_id)
        self.path = paths.safe_join(self.directory, self.filename)
        self.max_bytes = max_bytes
        self.size = 0
        self._hash = hashlib.sha256()
        self._head = bytearray()
        self._lock_fd = -1
        try:
            self.directory.mkdir(parents=True)
            self._lock_fd = paths.lock_directory(self.directory) or -1
            self._file = _UploadFile(self.path, conf.UPLOAD_BUFFER_BYTES, conf.DIRECT_IO)
        except BaseException as exc:
            self._remove()
            if is_disk_full(exc):
                raise InsufficientStorage() from exc
            raise

    def write(self, data: Chunk) -> None:
        self.write_chunks((data,))

    def write_chunks(self, chunks: Sequence[Chunk]) -> None:
        """
        Append `chunks` to the file and the hash. Blocking; the chunks must not
        change until it returns. Calls must not overlap.
        """
        size = sum(len(chunk) for chunk in chunks)
        if self.max_bytes is not None and self.size + size > self.max_bytes:
            self.abort()
            raise LimitExceeded(self.max_bytes)
        for chunk in chunks:
            if len(self._head) >= SNIFF_BYTES:
                break
            self._head += chunk[: SNIFF_BYTES - len(self._head)]
        try:
            if size >= PARALLEL_HASH_MIN_BYTES:
                hashed = _hashers.submit(_hash_chunks, self._hash, chunks)
                try:
                    self._file.write(chunks)
                finally:
                    # Wait even if the write failed: the caller may reuse the chunks.
                    hashed.exception()
                hashed.result()
            else:
                _hash_chunks(self._hash, chunks)
                self._file.write(chunks)
        except OSError as exc:
            self.abort()
            if is_disk_full(exc):
                raise InsufficientStorage() from exc
            raise
        self.size += size

    def finish(self, sync: bool = False) -> ReceivedFile:
        """
        The received file, all of it written. Its fsync is left to
        `ReceivedFile.sync()` unless `sync`: recording runs it in parallel
        with the other fsyncs of the commit.
        """
        try:
            self._file.close(flush=True, sync=sync)
        except OSError as exc:
            self.abort()
            if is_disk_full(exc):
                raise InsufficientStorage() from exc
            raise
        received = ReceivedFile(
            attachment_id=self.attachment_id,
            name=self.name,
            filename=self.filename,
            path=self.path,
            directory=self.directory,
            size=self.size,
            sha256=self._hash.hexdigest(),
            head=bytes(self._head),
            lock_fd=self._lock_fd,
            synced=sync,
        )
        self._lock_fd = -1  # handed over
        return received

    def abort(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self._file.close(flush=False)
        self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        if self._lock_fd >= 0:
            fd, self._lock_fd = self._lock_fd, -1
            os.close(fd)
