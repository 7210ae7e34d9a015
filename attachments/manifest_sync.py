"""
The ORM mirror of the manifests: bringing a session's rows in line with its
manifest (files that workflow nodes registered, `rebuild_attachments`), and
auto-clean. Uploads are recorded by `attachments.committing`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import paths
from .conf import conf
from .manifest import (
    AttachmentEntry,
    Manifest,
    ManifestDocument,
    ManifestError,
    is_manifest_internal,
)
from .models import Attachment, Session
from .quotas import reset_usage

logger = logging.getLogger(__name__)


def manifest_for(session: Session) -> Manifest:
    return Manifest(session.directory, session.session_id)


def mirror_fields(entry: AttachmentEntry) -> dict[str, Any]:
    """The Attachment row's fields for a manifest entry."""
    return {
        "name": entry.name,
        "path": entry.path,
        "mime": entry.mime,
        "kind": entry.kind,
        "size": entry.size,
        "sha256": entry.sha256,
        "source": entry.source,
        "node_id": entry.node_id or "",
        "metadata": entry.metadata,
        "created_at": datetime.fromisoformat(entry.created_at),
        "updated_at": datetime.fromisoformat(entry.updated_at),
        "purged_at": None,
    }


@dataclass
class SyncReport:
    created: int = 0
    updated: int = 0
    removed: int = 0
    completed: int = 0  # manifest entries written back from rows


def entry_for_row(row: Attachment) -> AttachmentEntry:
    """The manifest entry a row mirrors, for writing a lost entry back."""
    return AttachmentEntry(
        attachment_id=row.attachment_id,
        name=row.name,
        path=row.path,
        mime=row.mime,
        kind=row.kind,
        size=row.size,
        sha256=row.sha256,
        source=row.source,
        created_at=row.created_at.isoformat(timespec="microseconds"),
        updated_at=row.updated_at.isoformat(timespec="microseconds"),
        node_id=row.node_id or None,
        metadata=row.metadata,
    )


def sync_session_from_manifest(session: Session) -> SyncReport:
    """
    Make the session's manifest and attachment rows agree. The manifest is
    the source of truth for what it lists (files registered by workflow
    nodes, or a database restored from the manifests); a live row it lacks
    is written back to it when the row's file exists (an upload committed
    just before a crash), and removed otherwise. Running it twice changes
    nothing.
    """
    manifest = manifest_for(session)
    with manifest.locked() as document:
        return sync_locked(session, manifest, document)


def sync_locked(session: Session, manifest: Manifest, document: ManifestDocument) -> SyncReport:
    """`sync_session_from_manifest` for a caller that holds the manifest's lock."""
    report = SyncReport()
    with transaction.atomic():
        existing = {a.attachment_id: a for a in session.attachments.all()}
        listed = {entry.attachment_id for entry in document.attachments}
        for key, row in existing.items():
            if key not in listed and row.purged_at is None and _file_exists(session, row.path):
                document.append(entry_for_row(row))
                report.completed += 1
        if report.completed:
            manifest.save(document)
        # Rows marked purged (auto-clean) stay as tombstones; every change
        # goes through save() or delete() per row, so the receivers that
        # turn rows into artifact events see each one.
        purged = {k for k, a in existing.items() if a.purged_at is not None}
        for entry in document.attachments:
            fields = mirror_fields(entry)
            row = existing.pop(entry.attachment_id, None)
            if row is None:
                Attachment.objects.create(
                    session=session, attachment_id=entry.attachment_id, **fields
                )
                report.created += 1
            elif any(getattr(row, name) != value for name, value in fields.items()):
                for name, value in fields.items():
                    setattr(row, name, value)
                row.save()
                report.updated += 1
        stale = [row.pk for key, row in existing.items() if key not in purged]
        if stale:
            report.removed = len(stale)
            Attachment.objects.filter(pk__in=stale).delete()
        reset_usage(session)
    return report


def _file_exists(session: Session, relative: str) -> bool:
    try:
        return paths.safe_join(session.directory, relative).is_file()
    except paths.UnsafePath:
        return False


def purge_attachments(session: Session) -> int:
    """
    Auto-clean: remove the session's attachments/ directory and mark every
    attachment record purged, one save() per row. Workspace files that were
    registered in place stay on disk; only their records go. Returns the
    number of records purged.
    """
    manifest = manifest_for(session)
    directory = paths.attachments_dir(session.directory)
    purged = 0
    with manifest.locked() as document, transaction.atomic():
        now = timezone.now()
        for row in session.attachments.filter(purged_at__isnull=True):
            row.purged_at = now
            row.save(update_fields=["purged_at"])
            purged += 1
        # Files not in the manifest belong to uploads still in flight: they
        # are left to finish and be recorded.
        for entry in document.attachments:
            target = directory / entry.attachment_id
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
        manifest.path.unlink(missing_ok=True)
        reset_usage(session)
    # The directory goes only if nothing but its internals is left (an
    # upload in flight keeps it).
    if directory.is_dir() and all(is_manifest_internal(p.name) for p in directory.iterdir()):
        with contextlib.suppress(OSError):
            (paths.staging_dir(session.directory)).rmdir()
            for p in directory.iterdir():
                p.unlink()
            directory.rmdir()
    return purged


def rebuild_from_warehouse() -> dict[str, SyncReport]:
    """Mirror every manifest under the warehouse into the ORM, creating missing sessions."""
    reports: dict[str, SyncReport] = {}
    warehouse = conf.WAREHOUSE_DIR
    if not warehouse.is_dir():
        return reports
    for directory in sorted(warehouse.glob("session_*")):
        session_id = directory.name.removeprefix("session_")
        if not directory.is_dir() or not paths.is_valid_session_id(session_id):
            continue
        session, _created = Session.objects.get_or_create(session_id=session_id)
        if session.purged_at is not None:
            continue
        try:
            reports[session_id] = sync_session_from_manifest(session)
        except ManifestError as exc:
            logger.error("Skipping session %s: %s", session_id, exc)
    return reports
