"""
Receiving an upload: bytes go straight to their final place on disk and are
hashed in the same pass. Used by both the Django upload handler below and the
streaming ASGI path (`attachments.asgi`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopFutureHandlers, StopUpload

from . import paths
from .identifiers import new_attachment_id
from .mime import SNIFF_BYTES

Chunk: TypeAlias = bytes | bytearray | memoryview


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
        self._file = open(self.path, "xb", buffering=0)  # noqa: SIM115 (closed in finish/abort)

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
            if len(self._head) < SNIFF_BYTES:
                self._head += chunk[: SNIFF_BYTES - len(self._head)]
            self._hash.update(chunk)
            view = memoryview(chunk)
            while view:
                written = self._file.write(view)
                view = view[written:]
        self.size += size

    def finish(self) -> ReceivedFile:
        os.fsync(self._file.fileno())
        self._file.close()
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
            self._file.close()
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
        super().new_file(field_name, file_name, *args, **kwargs)
        self._sink = UploadSink(self.attachments_path, file_name, self.max_bytes)
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
