"""
`AttachmentStore`: registering files as attachments from any process.

A workflow node's subprocess, the workspace hook and the server all use it:
no Django import here, only the manifest, the path helpers, identifiers and
MIME detection. Every change goes through `Manifest.edit()`, under the same
inter-process lock as uploads, so concurrent writers never lose an entry.
The server mirrors the manifest into the ORM afterwards
(`attachments.manifest_sync.sync_session_from_manifest`), which is what emits
events: the manifest stays the one source of truth.

Inside a node, `AttachmentStore.from_env()` finds the session through the
`MAC_SESSION_DIR` and `MAC_SESSION_ID` variables that the runner sets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import paths
from .identifiers import new_attachment_id
from .manifest import AttachmentEntry, Manifest, ManifestDocument, utc_now_iso
from .mime import SNIFF_BYTES, detect_mime, kind_for_mime

SESSION_DIR_ENV = "MAC_SESSION_DIR"
SESSION_ID_ENV = "MAC_SESSION_ID"
NODE_ID_ENV = "MAC_NODE_ID"

# The metadata key naming the workspace file an attachment was copied from.
ORIGIN_KEY = "origin"
_CHUNK = 1 << 20


class RegistrationError(ValueError):
    """The file cannot be registered: missing, not a regular file, or outside the session."""


@dataclasses.dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str
    head: bytes


def digest_file(path: str | os.PathLike[str]) -> FileDigest:
    """Size, sha256 and first bytes of a file, in one pass."""
    sha = hashlib.sha256()
    head = bytearray()
    size = 0
    with open(path, "rb") as source:
        while chunk := source.read(_CHUNK):
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
            sha.update(chunk)
            size += len(chunk)
    return FileDigest(size, sha.hexdigest(), bytes(head))


def _copy_with_digest(source: Path, target: Path) -> FileDigest:
    sha = hashlib.sha256()
    head = bytearray()
    size = 0
    with open(source, "rb") as reader, open(target, "xb") as writer:
        while chunk := reader.read(_CHUNK):
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
            sha.update(chunk)
            writer.write(chunk)
            size += len(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    return FileDigest(size, sha.hexdigest(), bytes(head))


class AttachmentStore:
    """A session's attachments, as seen from its directory on disk."""

    def __init__(self, session_dir: str | os.PathLike[str], session_id: str) -> None:
        # Resolved once, so that paths checked with `resolve_inside` relate to it.
        self.session_dir = Path(os.path.realpath(session_dir))
        self.session_id = session_id
        self.workspace = paths.workspace_dir(self.session_dir)
        self.attachments = paths.attachments_dir(self.session_dir)
        self.manifest = Manifest(self.session_dir, session_id)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AttachmentStore:
        """The store of the session a workflow node runs in, from the runner's variables."""
        env = os.environ if environ is None else environ
        try:
            session_dir, session_id = env[SESSION_DIR_ENV], env[SESSION_ID_ENV]
        except KeyError as exc:
            raise RuntimeError(
                f"{exc.args[0]} is not set: from_env() works inside a workflow node."
            ) from None
        return cls(session_dir, session_id)

    # Reading

    def entries(self) -> list[AttachmentEntry]:
        return self.manifest.read().attachments

    def get(self, attachment_id: str) -> AttachmentEntry | None:
        return self.manifest.read().get(attachment_id)

    def relative(self, path: Path) -> str:
        """A path inside the session, relative to the session directory, with forward slashes."""
        return path.relative_to(self.session_dir).as_posix()

    def is_in_place(self, entry: AttachmentEntry) -> bool:
        """Whether the entry points at a workspace file rather than a file under attachments/."""
        prefix = paths.WORKSPACE_DIRNAME + "/"
        inside_attachments = prefix + paths.ATTACHMENTS_DIRNAME + "/"
        return entry.path.startswith(prefix) and not entry.path.startswith(inside_attachments)

    # Registering

    def register_file(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        source: str = "registered",
        node_id: str | None = None,
        move: bool = False,
        in_place: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> AttachmentEntry:
        """
        Register a file of the session as an attachment and return its entry.

        A relative `path` is taken from the workspace. By default the file is
        copied into `attachments/<id>/<safe name>`, a snapshot that later
        changes to the original do not touch; `move=True` moves it there
        instead. `in_place=True` records the workspace file where it is: one
        entry per path, so registering the same path again updates that entry.

        The file must be a regular file that resolves inside the session
        directory (symlinks are followed only that far). `node_id` defaults
        to `MAC_NODE_ID` inside a node.
        """
        if move and in_place:
            raise ValueError("move and in_place exclude each other.")
        source_path = self._checked_source(path)
        node_id = node_id if node_id is not None else os.environ.get(NODE_ID_ENV) or None
        display = paths.display_name(name or source_path.name)
        extra = dict(metadata or {})
        if in_place:
            return self._register_in_place(source_path, display, source, node_id, extra)

        attachment_id = new_attachment_id()
        filename = paths.sanitize_filename(display)
        with self._staging_directory(attachment_id) as staged:
            return self._register_staged(
                staged, source_path, display, filename, attachment_id, source, node_id, extra, move
            )

    def _register_staged(
        self,
        staged: Path,
        source_path: Path,
        display: str,
        filename: str,
        attachment_id: str,
        source: str,
        node_id: str | None,
        extra: dict[str, Any],
        move: bool,
    ) -> AttachmentEntry:
        target = paths.safe_join(staged, filename)
        try:
            if move:
                os.replace(source_path, target)
                digest = digest_file(target)
            else:
                digest = _copy_with_digest(source_path, target)
            origin = self._origin_of(source_path)
            if origin is not None and not move:
                extra.setdefault(ORIGIN_KEY, origin)
            with self.manifest.locked() as document:
                # The workspace hook may have registered the original in place
                # already: the copy takes over that entry instead of adding a
                # second attachment for the same file.
                adopted = self._in_place_twin(document, origin, digest.sha256)
                if adopted is not None:
                    attachment_id = adopted.attachment_id
                final = paths.safe_join(self.attachments, attachment_id)
                entry = self._new_entry(
                    attachment_id, display, final / filename, digest, source, node_id, extra
                )
                if adopted is not None:
                    entry = entry.replace(created_at=adopted.created_at)
                os.rename(staged, final)
                staged = final
                document.upsert(entry)
                self.manifest.save(document)
        except BaseException:
            if move and target.exists() and not source_path.exists():
                with contextlib.suppress(OSError):
                    os.replace(target, source_path)
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return entry

    def register_bytes(
        self,
        data: bytes,
        name: str,
        *,
        source: str = "registered",
        node_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AttachmentEntry:
        """Write `data` into `attachments/<id>/<safe name>` and register it."""
        node_id = node_id if node_id is not None else os.environ.get(NODE_ID_ENV) or None
        display = paths.display_name(name)
        attachment_id = new_attachment_id()
        filename = paths.sanitize_filename(display)
        final = paths.safe_join(self.attachments, attachment_id)
        with self._staging_directory(attachment_id) as staged, contextlib.ExitStack() as undo:
            undo.callback(shutil.rmtree, staged, True)
            with open(staged / filename, "xb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            digest = FileDigest(len(data), hashlib.sha256(data).hexdigest(), data[:SNIFF_BYTES])
            entry = self._new_entry(
                attachment_id,
                display,
                final / filename,
                digest,
                source,
                node_id,
                dict(metadata or {}),
            )
            with self.manifest.locked() as document:
                os.rename(staged, final)
                try:
                    document.append(entry)
                    self.manifest.save(document)
                except BaseException:
                    shutil.rmtree(final, ignore_errors=True)
                    raise
            undo.pop_all()
        return entry

    def remove(self, attachment_id: str) -> AttachmentEntry | None:
        """Drop an entry; a file under attachments/ goes with it, a workspace file stays."""
        with self.manifest.edit() as document:
            entry = document.remove(attachment_id)
        if entry is not None and not self.is_in_place(entry):
            directory = paths.safe_join(self.attachments, entry.attachment_id)
            shutil.rmtree(directory, ignore_errors=True)
        return entry

    def entry_for_file(
        self,
        path: Path,
        digest: FileDigest,
        *,
        source: str,
        node_id: str | None,
        existing: AttachmentEntry | None = None,
        name: str | None = None,
    ) -> AttachmentEntry:
        """
        The entry for a workspace file recorded in place: a new one, or
        `existing` brought up to date (same id and creation time).
        """
        entry = self._new_entry(
            existing.attachment_id if existing else new_attachment_id(),
            paths.display_name(name or (existing.name if existing else path.name)),
            path,
            digest,
            existing.source if existing else source,
            node_id if node_id is not None else (existing.node_id if existing else None),
            dict(existing.metadata) if existing else {},
        )
        if existing is not None:
            entry = entry.replace(created_at=existing.created_at)
        return entry

    # Internals

    @contextlib.contextmanager
    def _staging_directory(self, attachment_id: str) -> Iterator[Path]:
        """
        A new directory under staging for a file being written, invisible to
        listings and zips until it is renamed into place under the manifest
        lock. It is held with `paths.lock_directory` meanwhile: should this
        process die, reconciliation removes it.
        """
        staged = paths.safe_join(paths.staging_dir(self.session_dir), attachment_id)
        staged.mkdir(parents=True)
        fd = paths.lock_directory(staged)
        try:
            yield staged
        finally:
            if fd is not None:
                os.close(fd)

    def _checked_source(self, path: str | os.PathLike[str]) -> Path:
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = self.workspace / candidate
        try:
            real = paths.resolve_inside(self.session_dir, candidate)
        except paths.UnsafePath as exc:
            raise RegistrationError(
                f"{os.fspath(path)!r} is outside the session directory."
            ) from exc
        try:
            mode = os.stat(real).st_mode
        except FileNotFoundError:
            raise RegistrationError(f"{os.fspath(path)!r} does not exist.") from None
        if not stat.S_ISREG(mode):
            raise RegistrationError(f"{os.fspath(path)!r} is not a regular file.")
        return real

    def _origin_of(self, path: Path) -> str | None:
        """The workspace-relative origin of a file outside attachments/, else None."""
        try:
            relative = path.relative_to(self.workspace)
        except ValueError:
            return None
        if relative.parts and relative.parts[0] == paths.ATTACHMENTS_DIRNAME:
            return None
        return self.relative(path)

    def _in_place_twin(
        self, document: ManifestDocument, origin: str | None, sha256: str
    ) -> AttachmentEntry | None:
        if origin is None:
            return None
        for entry in document.attachments:
            if entry.path == origin and entry.sha256 == sha256 and self.is_in_place(entry):
                return entry
        return None

    def _register_in_place(
        self,
        path: Path,
        display: str,
        source: str,
        node_id: str | None,
        metadata: dict[str, Any],
    ) -> AttachmentEntry:
        if self._origin_of(path) is None:
            raise RegistrationError(
                f"{path} is not a workspace file outside attachments/; copy or move it instead."
            )
        digest = digest_file(path)
        relative = self.relative(path)
        with self.manifest.edit() as document:
            existing = next((e for e in document.attachments if e.path == relative), None)
            if existing is None:
                entry = self._new_entry(
                    new_attachment_id(), display, path, digest, source, node_id, metadata
                )
            else:
                entry = existing.replace(
                    name=display,
                    size=digest.size,
                    sha256=digest.sha256,
                    mime=detect_mime(digest.head, display),
                    source=source,
                    node_id=node_id or existing.node_id,
                    metadata={**existing.metadata, **metadata},
                    updated_at=utc_now_iso(),
                )
                entry = entry.replace(kind=kind_for_mime(entry.mime))
            document.upsert(entry)
        return entry

    def _new_entry(
        self,
        attachment_id: str,
        name: str,
        path: Path,
        digest: FileDigest,
        source: str,
        node_id: str | None,
        metadata: dict[str, Any],
    ) -> AttachmentEntry:
        return AttachmentEntry.for_new_file(
            attachment_id=attachment_id,
            name=name,
            path=self.relative(path),
            head=digest.head,
            size=digest.size,
            sha256=digest.sha256,
            source=source,
            node_id=node_id,
            metadata=metadata,
        )
