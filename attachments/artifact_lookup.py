"""
From an artifact or attachment id to the file it names in a session.

`resolve_artifact()` is the one way in for anything that serves a session's
files by id. `att_` ids are answered from the session's attachment records.
Other prefixes are answered by resolvers that their own app registers with
`register_resolver()` (the artifacts app, for the `art_` ids of its event
feed), so this app never imports that one. An id that no resolver claims, or
that its resolver does not find in this session, is 404 `artifact_not_found`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paths
from .exceptions import ArtifactFileMissing, ArtifactNotFound
from .identifiers import ATTACHMENT_PREFIX, ID_RE
from .models import Attachment, Session
from .serializers import AttachmentSerializer


@dataclass(frozen=True)
class ResolvedArtifact:
    """What serving an artifact needs, whichever record it came from."""

    artifact_id: str  # the id as the client gave it
    session: Session
    path: str  # relative to the session directory, with forward slashes
    name: str
    mime: str
    size: int  # as recorded
    sha256: str  # as recorded, hex; "" when unknown
    attachment_id: str | None = None
    # The record's own fields, shown by mode=meta (e.g. the attachment's source and kind).
    details: dict[str, Any] = field(default_factory=dict)

    def metadata(self, data_uri: str | None = None) -> dict[str, Any]:
        """What `mode=meta` shows: the record's fields, then the artifact's own, then `data_uri`."""
        return {
            **self.details,
            "artifact_id": self.artifact_id,
            "attachment_id": self.attachment_id,
            "session_id": self.session.session_id,
            "name": self.name,
            "path": self.path,
            "mime": self.mime,
            "size": self.size,
            "sha256": self.sha256,
            "hash": f"sha256:{self.sha256}" if self.sha256 else None,
            "data_uri": data_uri,
        }

    @property
    def file_path(self) -> Path:
        """The path as recorded, joined safely; links are resolved only by `open()`."""
        try:
            return paths.safe_join(self.session.directory, self.path)
        except paths.UnsafePath:
            raise ArtifactFileMissing(
                "This artifact's recorded path is not inside the session, so it is not served."
            ) from None

    def open(self) -> io.FileIO:
        """The file, opened for reading; 404 `artifact_file_missing` if it is not there."""
        try:
            return paths.open_inside(self.session.directory, self.file_path)
        except paths.UnsafePath:
            raise ArtifactFileMissing(
                "This artifact's file leads outside the session, so it is not served."
            ) from None
        except paths.NotARegularFile:
            raise ArtifactFileMissing("This artifact's path is not a regular file.") from None
        except OSError:
            raise ArtifactFileMissing(
                "This artifact is recorded, but its file is no longer in the session."
            ) from None


Resolver = Callable[[Session, str], ResolvedArtifact | None]

_resolvers: dict[str, Resolver] = {}


def register_resolver(prefix: str, resolver: Resolver) -> None:
    """Answer ids starting with `prefix` (e.g. "art_") with `resolver(session, id)`."""
    _resolvers[prefix] = resolver


def resolve_artifact(session: Session, artifact_id: str) -> ResolvedArtifact:
    """The artifact `artifact_id` of `session`, or 404 `artifact_not_found`."""
    if not isinstance(artifact_id, str) or not ID_RE.match(artifact_id):
        raise ArtifactNotFound()
    resolver = _resolvers.get(artifact_id[:4])
    resolved = resolver(session, artifact_id) if resolver is not None else None
    if resolved is None:
        raise ArtifactNotFound()
    return resolved


def resolve_attachment(session: Session, attachment_id: str) -> ResolvedArtifact | None:
    """An attachment of this session (never another's), unless purged."""
    attachment = (
        Attachment.objects.filter(
            session=session, attachment_id=attachment_id, purged_at__isnull=True
        )
        .select_related("session")
        .first()
    )
    if attachment is None:
        return None
    return ResolvedArtifact(
        artifact_id=attachment_id,
        session=session,
        path=attachment.path,
        name=attachment.name,
        mime=attachment.mime,
        size=attachment.size,
        sha256=attachment.sha256,
        attachment_id=attachment.attachment_id,
        details=dict(AttachmentSerializer(attachment).data),
    )


register_resolver(ATTACHMENT_PREFIX, resolve_attachment)
