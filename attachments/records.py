"""
Recording attachments: the manifest entry and its ORM mirror, written together
under the manifest's inter-process lock so that the two never disagree for
long and no concurrent writer loses an entry.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.db import transaction
from django.utils import timezone
from filelock import Timeout

from . import paths
from .conf import conf
from .exceptions import SessionNotFound, StorageBusy
from .manifest import LOCK_NAME, AttachmentEntry, Manifest, ManifestError
from .models import Attachment, Session
from .quotas import check_room_for
from .receiving import ReceivedFile
from .scanning import scan_file

logger = logging.getLogger(__name__)


def manifest_for(session: Session) -> Manifest:
    return Manifest(session.directory, session.session_id, lock_timeout=conf.LOCK_TIMEOUT)


def _relative(session: Session, path: Path) -> str:
    return path.relative_to(session.directory).as_posix()


def _mirror_fields(entry: AttachmentEntry) -> dict[str, object]:
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


def record_upload(
    session: Session, received: ReceivedFile, source: str = Attachment.Source.USER_UPLOAD
) -> Attachment:
    """
    Record a received file in the manifest and the database. On any failure
    the file is removed and neither record keeps a trace of it.
    """
    try:
        metadata = scan_file(received.path)
    except BaseException:
        received.discard()
        raise
    entry = AttachmentEntry.for_new_file(
        attachment_id=received.attachment_id,
        name=received.name,
        path=_relative(session, received.path),
        head=received.head,
        size=received.size,
        sha256=received.sha256,
        source=source,
        metadata=metadata,
    )
    manifest = manifest_for(session)
    try:
        with manifest.locked() as document:
            document.upsert(entry)
            try:
                with transaction.atomic():
                    # The row lock keeps a purge from slipping in between.
                    live = Session.objects.live().select_for_update().filter(pk=session.pk)
                    if not list(live.values_list("pk", flat=True)):
                        raise SessionNotFound()
                    check_room_for(session, entry.size)
                    attachment = Attachment.objects.create(
                        session=session, attachment_id=entry.attachment_id, **_mirror_fields(entry)
                    )
                    manifest.save(document)
            except BaseException:
                if document.remove(entry.attachment_id) and manifest.path.exists():
                    manifest.save(document)
                raise
    except Timeout:
        received.discard()
        raise StorageBusy() from None
    except BaseException:
        received.discard()
        raise
    received.claimed = True
    return attachment


@dataclass
class SyncReport:
    created: int = 0
    updated: int = 0
    removed: int = 0


def sync_session_from_manifest(session: Session) -> SyncReport:
    """
    Make the session's attachment rows match its manifest exactly: the
    manifest is the source of truth. Running it twice changes nothing.
    """
    report = SyncReport()
    manifest = manifest_for(session)
    with manifest.locked() as document, transaction.atomic():
        existing = {a.attachment_id: a for a in session.attachments.all()}
        # Rows marked purged (auto-clean) stay as tombstones; every change
        # goes through save() or delete() per row, so the receivers that
        # turn rows into artifact events see each one.
        purged = {k for k, a in existing.items() if a.purged_at is not None}
        for entry in document.attachments:
            fields = _mirror_fields(entry)
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
    return report


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
    # The lock file goes last, and the directory only if nothing else is left.
    if directory.is_dir() and all(p.name == LOCK_NAME for p in directory.iterdir()):
        (directory / LOCK_NAME).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
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
