"""
What the attachments app's downloads need from the event log, registered in
`ArtifactsConfig.ready()`:

- `art_` ids for `attachments.artifact_lookup.resolve_artifact()`: an event's id names
  the attachment that event announced, in the same session. What is served is
  that attachment as it is now (its recorded path, size and sha256), so the
  ETag always matches the bytes sent; the event's own fields (`change_type`,
  `sequence`, `timestamp`) are added to the metadata. An event of another
  session, or whose attachment is gone or purged, is not found.
- the session zip's `after=`: the paths changed since a cursor.
"""

from __future__ import annotations

import dataclasses

from attachments.archive import register_change_feed
from attachments.artifact_lookup import ResolvedArtifact, register_resolver, resolve_attachment
from attachments.models import Session

from .feed import start_cursor
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


def paths_changed_since(session: Session, cursor: int) -> set[str]:
    """
    The paths of files created or updated after `cursor` and not deleted
    since. Raises the feed's 410 `cursor_ahead` / `cursor_expired`, carrying
    the cursor to resume from, exactly as the event feed does.
    """
    start_cursor(session.session_id, cursor)
    changed: set[str] = set()
    latest = (
        ArtifactEvent.objects.filter(session=session, sequence__gt=cursor)
        .order_by("sequence")
        .values_list("path", "change_type")
    )
    for path, change_type in latest:
        if change_type == ArtifactEvent.ChangeType.DELETED:
            changed.discard(path)
        else:
            changed.add(path)
    return changed


def register() -> None:
    register_resolver(ARTIFACT_PREFIX, resolve_event)
    register_change_feed(paths_changed_since)
