"""
The portable record of a session's attachments: `attachments_manifest.json`.

Every writer, in any process (server workers, workflow nodes), goes through
`Manifest.locked()` or `Manifest.edit()`, which holds an inter-process lock for the whole
read-modify-write and replaces the file atomically, so no writer loses
another's entry and no reader ever sees half a file. No Django import here:
workflow nodes use this module in their own processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from .mime import detect_mime, kind_for_mime
from .paths import MANIFEST_NAME, attachments_dir

MANIFEST_VERSION = 1
LOCK_NAME = ".attachments_manifest.lock"
# The temporary file each save writes before renaming it over the manifest.
TEMP_PREFIX = ".manifest-"
TEMP_SUFFIX = ".tmp"


def is_manifest_internal(name: str) -> bool:
    """True for the lock and temporary files kept beside the manifest, not for its content."""
    return name == LOCK_NAME or (name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX))


class ManifestError(Exception):
    """The manifest on disk cannot be read."""


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclasses.dataclass
class AttachmentEntry:
    attachment_id: str
    name: str
    path: str  # relative to the session directory, with forward slashes
    mime: str
    kind: str
    size: int
    sha256: str
    source: str
    created_at: str
    updated_at: str
    node_id: str | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def for_new_file(
        cls,
        *,
        attachment_id: str,
        name: str,
        path: str,
        head: bytes,
        size: int,
        sha256: str,
        source: str,
        node_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AttachmentEntry:
        """The entry of a file recorded just now: MIME and kind from its first bytes and name."""
        mime = detect_mime(head, name)
        now = utc_now_iso()
        return cls(
            attachment_id=attachment_id,
            name=name,
            path=path,
            mime=mime,
            kind=kind_for_mime(mime),
            size=size,
            sha256=sha256,
            source=source,
            created_at=now,
            updated_at=now,
            node_id=node_id,
            metadata=metadata or {},
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttachmentEntry:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclasses.dataclass
class ManifestDocument:
    session_id: str
    attachments: list[AttachmentEntry]
    updated_at: str = ""

    def get(self, attachment_id: str) -> AttachmentEntry | None:
        for entry in self.attachments:
            if entry.attachment_id == attachment_id:
                return entry
        return None

    def upsert(self, entry: AttachmentEntry) -> None:
        for index, existing in enumerate(self.attachments):
            if existing.attachment_id == entry.attachment_id:
                self.attachments[index] = entry
                return
        self.attachments.append(entry)

    def remove(self, attachment_id: str) -> AttachmentEntry | None:
        for index, existing in enumerate(self.attachments):
            if existing.attachment_id == attachment_id:
                return self.attachments.pop(index)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "session_id": self.session_id,
            "updated_at": self.updated_at,
            "attachments": [entry.to_dict() for entry in self.attachments],
        }


class Manifest:
    """A session's manifest file and the lock that guards it."""

    def __init__(self, session_path: Path, session_id: str, lock_timeout: float = 30.0) -> None:
        self.session_id = session_id
        self.directory = attachments_dir(session_path)
        self.path = self.directory / MANIFEST_NAME
        self._lock = FileLock(self.directory / LOCK_NAME, timeout=lock_timeout)

    def read(self) -> ManifestDocument:
        """The manifest as last written; an absent file is an empty manifest."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return ManifestDocument(session_id=self.session_id, attachments=[])
        try:
            data = json.loads(raw)
            entries = [AttachmentEntry.from_dict(item) for item in data.get("attachments", [])]
        except (ValueError, TypeError, AttributeError) as exc:
            raise ManifestError(f"{self.path} is not a valid manifest: {exc}") from exc
        return ManifestDocument(
            session_id=data.get("session_id", self.session_id),
            attachments=entries,
            updated_at=data.get("updated_at", ""),
        )

    @contextlib.contextmanager
    def locked(self) -> Iterator[ManifestDocument]:
        """
        Hold the inter-process lock and yield the current document. Nothing
        is written unless the caller calls `save()` inside the block, so work
        that must stay consistent with the manifest (the ORM mirror) can
        decide whether the change happens at all.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            yield self.read()

    @contextlib.contextmanager
    def edit(self) -> Iterator[ManifestDocument]:
        """Like `locked()`, saving the document when the block exits normally."""
        with self.locked() as document:
            yield document
            self.save(document)

    def save(self, document: ManifestDocument) -> None:
        """Replace the file atomically (temp file, fsync, rename). Call it under the lock."""
        document.updated_at = utc_now_iso()
        self._write(document)

    def _write(self, document: ManifestDocument) -> None:
        payload = json.dumps(document.to_dict(), ensure_ascii=False, indent=2).encode("utf-8")
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(payload)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
