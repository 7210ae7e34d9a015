"""
`art_` ids for `attachments.lookup.resolve_artifact()`: an event's id names
the attachment that event announced, in the same session.

What is served is that attachment as it is now (its recorded path, size and
sha256), so the ETag always matches the bytes sent; the event's own fields
(`change_type`, `sequence`, `timestamp`) are added to the metadata. An event
of another session, or whose attachment is gone or purged, is not found.
"""

from __future__ import annotations

import dataclasses

from attachments.lookup import ResolvedArtifact, register_resolver, resolve_attachment
from attachments.models import Session

from .models import ARTIFACT_PREFIX, ArtifactEvent


def resolve_event(session: Session, artifact_id: str) -> ResolvedArtifact | None:
    event = (
        ArtifactEvent.objects.filter(session=session, artifact_id=artifact_id)
        .only("attachment_id", "change_type", "sequence", "created_at")
        .first()
    )
    if event is None or not event.attachment_id:
        return None
    attachment = resolve_attachment(session, event.attachment_id)
    if attachment is None:
        return None
    details = {
        **attachment.details,
        "change_type": event.change_type,
        "sequence": event.sequence,
        "timestamp": event.created_at.timestamp(),
    }
    return dataclasses.replace(attachment, artifact_id=artifact_id, details=details)


def register() -> None:
    register_resolver(ARTIFACT_PREFIX, resolve_event)
