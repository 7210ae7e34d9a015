"""
What the attachments app's downloads need from the event log: `art_` ids
resolved to the file an event describes, and the paths changed since a
cursor (the session zip's `after=`). Registered in `ArtifactsConfig.ready()`.
"""

from __future__ import annotations

from attachments.lookup import ResolvedArtifact
from attachments.models import Session

from .feed import start_cursor
from .models import ArtifactEvent


def resolve_event_artifact(session: Session, artifact_id: str) -> ResolvedArtifact | None:
    """
    The file an `art_` event names, as the event recorded it. An event of a
    deleted file resolves to nothing: there is no file to serve.
    """
    event = ArtifactEvent.objects.filter(session=session, artifact_id=artifact_id).first()
    if event is None or event.change_type == ArtifactEvent.ChangeType.DELETED:
        return None
    return ResolvedArtifact(
        artifact_id=artifact_id,
        session=session,
        path=event.path,
        name=event.name,
        mime=event.mime,
        size=event.size,
        sha256=event.sha256,
        attachment_id=event.attachment_id or None,
        details={
            "kind": event.kind,
            "node_id": event.node_id or None,
            "change_type": event.change_type,
            "sequence": event.sequence,
            "timestamp": event.created_at.timestamp(),
        },
    )


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
