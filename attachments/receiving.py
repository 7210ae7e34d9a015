"""
Receiving an upload: bytes go straight to their final place on disk and are
hashed in the same pass. Used by both the Django upload handler below and the
streaming ASGI path (`attachments.asgi`).
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

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import (
    FileUploadHandler,
    SkipFile,
    StopFutureHandlers,
    StopUpload,
)

from . import paths
from .conf import conf
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

    def close(self, sync: bool) -> None:
        """With `sync`, write what is left and fsync; otherwise just let go. Idempotent."""
        if self._fd < 0:
            return
        try:
            if sync:
                if self._direct:
                    # The tail is seldom a whole number of blocks.
                    self._direct = self._set_direct(False)
                self._write_buffer()
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


@dataclasses.dataclass
class ReceivedFile:
    """A file fully written to its final place, not yet recorded anywhere."""

    attachment_id: str
    name: str  # as the client gave it, for display
    path: Path  # absolute
    directory: Path  # attachments/<attachment_id>, removed whole on discard
    size: int
    sha256: str
    head: bytes  # the first bytes, for MIME detection without a re-read
    claimed: bool = False

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class UploadSink:
    """
    Writes one upload into `attachments/<new id>/<safe name>`, hashing as it
    goes. Either `finish()` returns the `ReceivedFile`, or `abort()` removes
    every trace of it.
    """

    def __init__(
        self, attachments_path: Path, client_name: str, max_bytes: int | None = None
    ) -> None:
        self.attachment_id = new_attachment_id()
        self.name = paths.display_name(client_name)
        self.directory = paths.safe_join(attachments_path, self.attachment_id)
        self.path = paths.safe_join(self.directory, paths.sanitize_filename(client_name))
        self.max_bytes = max_bytes
        self.size = 0
        self._hash = hashlib.sha256()
        self._head = bytearray()
        self.directory.mkdir(parents=True)
        self._file = _UploadFile(self.path, conf.UPLOAD_BUFFER_BYTES, conf.DIRECT_IO)

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
        self.size += size

    def finish(self) -> ReceivedFile:
        self._file.close(sync=True)
        return ReceivedFile(
            attachment_id=self.attachment_id,
            name=self.name,
            path=self.path,
            directory=self.directory,
            size=self.size,
            sha256=self._hash.hexdigest(),
            head=bytes(self._head),
        )

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close(sync=False)
        shutil.rmtree(self.directory, ignore_errors=True)


class StreamedUploadedFile(UploadedFile):
    """What `request.FILES` holds for a file that `AttachmentUploadHandler` received."""

    def __init__(self, received: ReceivedFile, content_type: str | None) -> None:
        super().__init__(
            file=None, name=received.name, content_type=content_type, size=received.size
        )
        self.received = received

    def open(self, mode: str | None = None) -> StreamedUploadedFile:
        self.file = open(self.received.path, mode or "rb")  # noqa: SIM115
        return self


class AttachmentUploadHandler(FileUploadHandler):
    """
    A Django upload handler that streams each file of a multipart body into
    the session's attachments directory and hashes it on the way, so no copy
    is kept in memory or in a temporary file.

    Set it on a request before touching `request.FILES`; afterwards,
    `received` lists every file it wrote, and `limit_exceeded` tells whether
    it stopped because of `max_bytes`.
    """

    def __init__(
        self, attachments_path: Path, max_bytes: int | None, request: Any = None
    ) -> None:
        super().__init__(request)
        self.attachments_path = attachments_path
        self.max_bytes = max_bytes
        self.received: list[ReceivedFile] = []
        self.limit_exceeded: int | None = None
        self._sink: UploadSink | None = None

    def new_file(self, field_name: str, file_name: str, *args: Any, **kwargs: Any) -> None:
        if (name := paths.form_file_name(file_name)) is None:
            raise SkipFile()  # nothing left once decoded: no file, as on the streaming path
        super().new_file(field_name, name, *args, **kwargs)
        self._sink = UploadSink(self.attachments_path, name, self.max_bytes)
        raise StopFutureHandlers()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        assert self._sink is not None
        try:
            self._sink.write(raw_data)
        except LimitExceeded as exc:
            self._sink = None
            self.limit_exceeded = exc.limit
            raise StopUpload(connection_reset=True) from exc
        return None

    def file_complete(self, file_size: int) -> StreamedUploadedFile | None:
        if self._sink is None:
            return None
        received = self._sink.finish()
        self._sink = None
        self.received.append(received)
        return StreamedUploadedFile(received, self.content_type)

    def upload_interrupted(self) -> None:
        if self._sink is not None:
            self._sink.abort()
            self._sink = None

    def discard_unclaimed(self) -> None:
        for received in self.received:
            if not received.claimed:
                received.discard()
