"""
Reconciliation: finding and putting right what a crash can leave behind.

The write protocol (`attachments.committing`) leaves, at worst:

- staging directories of uploads whose process died (nobody holds their
  `flock` any more): removed;
- temporary manifests of a save that never finished: removed;
- files moved into `attachments/<id>/` by a batch that died before its
  commit point (no row, no manifest entry): removed;
- rows committed by a batch that died before the manifest was replaced:
  their entries are written back to the manifest;
- manifest entries without rows (written by workflow nodes, or a database
  restored from older state): rows are created, with their events;
- sessions marked purged whose directory could not be removed: removed;
- resumable uploads whose last byte was acknowledged but whose recording
  the crash cut short: recorded (`attachments.resumable.record_interrupted`);
- whatever the apps built on this one register with `add_step()` (the
  `workflows` app: runs a dead worker left in flight, marked failed).

Everything for one session happens under its manifest lock, so uploads in
flight in other workers are never mistaken for leftovers. It runs when a
worker starts (`ATTACHMENTS_RECONCILE_AT_START`) and as
`manage.py check_warehouse [--repair]`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from django.db import close_old_connections, connections
from django.utils import timezone

from . import paths
from .conf import conf
from .manifest import TEMP_PREFIX, TEMP_SUFFIX, ManifestError
from .manifest_sync import manifest_for, sync_locked
from .models import ResumableUpload, Session

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Report:
    """What reconciliation found (and, with repair, put right)."""

    staging_removed: list[str] = dataclasses.field(default_factory=list)
    temp_manifests_removed: list[str] = dataclasses.field(default_factory=list)
    orphan_files_removed: list[str] = dataclasses.field(default_factory=list)
    entries_completed: int = 0
    rows_created: int = 0
    rows_removed: int = 0
    purges_finished: list[str] = dataclasses.field(default_factory=list)
    uploads_recorded: list[str] = dataclasses.field(default_factory=list)
    other: list[str] = dataclasses.field(default_factory=list)  # from registered steps
    errors: list[str] = dataclasses.field(default_factory=list)

    def add(self, other: Report) -> None:
        for field in dataclasses.fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            setattr(self, field.name, mine + theirs)

    @property
    def changes(self) -> int:
        return (
            len(self.staging_removed)
            + len(self.temp_manifests_removed)
            + len(self.orphan_files_removed)
            + self.entries_completed
            + self.rows_created
            + self.rows_removed
            + len(self.purges_finished)
            + len(self.uploads_recorded)
            + len(self.other)
        )

    def lines(self) -> list[str]:
        out = []
        for label, items in (
            ("interrupted upload in staging", self.staging_removed),
            ("unfinished manifest save", self.temp_manifests_removed),
            ("file never committed", self.orphan_files_removed),
            ("purge left unfinished", self.purges_finished),
            ("resumable upload complete but not recorded", self.uploads_recorded),
        ):
            out.extend(f"{label}: {item}" for item in items)
        if self.entries_completed:
            out.append(f"manifest entries written back from rows: {self.entries_completed}")
        if self.rows_created:
            out.append(f"rows created from manifest entries: {self.rows_created}")
        if self.rows_removed:
            out.append(f"rows without a file removed: {self.rows_removed}")
        out.extend(self.other)
        out.extend(f"error: {error}" for error in self.errors)
        return out


def _staging_leftovers(session_path: Path, repair: bool, resumable: set[str]) -> list[str]:
    staging = paths.staging_dir(session_path)
    found = []
    with contextlib.suppress(FileNotFoundError):
        for child in sorted(staging.iterdir()):
            if not child.is_dir() or child.is_symlink() or child.name in resumable:
                continue
            fd = paths.lock_directory(child, blocking=False)
            if fd is None:
                continue  # an upload in progress in a live process
            try:
                found.append(child.relative_to(session_path).as_posix())
                if repair:
                    shutil.rmtree(child, ignore_errors=True)
            finally:
                os.close(fd)
    return found


def reconcile_session(session: Session, repair: bool = True) -> Report:
    """Check (and with `repair`, fix) one live session's files, manifest and rows."""
    report = Report()
    manifest = manifest_for(session)
    directory = manifest.directory
    if not directory.is_dir():
        return report
    with manifest.lock():
        # Resumable uploads wait in staging between their requests until they expire.
        resumable = set(
            ResumableUpload.objects.filter(
                session=session, expires_at__gt=timezone.now()
            ).values_list("attachment_id", flat=True)
        )
        report.staging_removed = _staging_leftovers(session.directory, repair, resumable)
        for child in sorted(directory.iterdir()):
            name = child.name
            if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
                report.temp_manifests_removed.append(
                    child.relative_to(session.directory).as_posix()
                )
                if repair:
                    child.unlink(missing_ok=True)
        try:
            document = manifest.read()
        except ManifestError as exc:
            report.errors.append(str(exc))
            return report
        known = {entry.attachment_id for entry in document.attachments}
        known.update(session.attachments.values_list("attachment_id", flat=True))
        for child in sorted(directory.iterdir()):
            if child.is_dir() and not child.is_symlink() and child.name.startswith("att_"):
                if child.name not in known:
                    report.orphan_files_removed.append(
                        child.relative_to(session.directory).as_posix()
                    )
                    if repair:
                        shutil.rmtree(child, ignore_errors=True)
        if repair:
            synced = sync_locked(session, manifest, document)
            report.entries_completed = synced.completed
            report.rows_created = synced.created
            report.rows_removed = synced.removed
    return report


# Reconciliation steps of the apps built on this one: (label, step), where
# step(repair) returns what it found (and, with repair, put right).
_steps: list[tuple[str, Callable[[bool], list[str]]]] = []


def add_step(label: str, step: Callable[[bool], list[str]]) -> None:
    """Have reconciliation run `step` too (once per label), reporting each item under `label`."""
    if all(existing != label for existing, _step in _steps):
        _steps.append((label, step))


def reconcile_warehouse(repair: bool = True) -> Report:
    """Reconcile every session in the warehouse, and finish purges left half done."""
    from .resumable import purge_expired, record_interrupted

    report = Report()
    if repair:
        purge_expired()
    warehouse = conf.WAREHOUSE_DIR
    if not warehouse.is_dir():
        return report
    # Before the sessions' checks, which hold their manifest locks that recording takes.
    report.uploads_recorded = record_interrupted(repair)
    on_disk = {}
    for directory in warehouse.glob("session_*"):
        session_id = directory.name.removeprefix("session_")
        if directory.is_dir() and paths.is_valid_session_id(session_id):
            on_disk[session_id] = directory
    for session in Session.objects.filter(session_id__in=list(on_disk)).order_by("session_id"):
        if session.purged_at is not None:
            report.purges_finished.append(session.session_id)
            if repair:
                shutil.rmtree(on_disk[session.session_id], ignore_errors=True)
            continue
        try:
            report.add(reconcile_session(session, repair))
        except Exception as exc:  # noqa: BLE001 (one broken session must not stop the rest)
            logger.exception("Reconciling session %s failed", session.session_id)
            report.errors.append(f"{session.session_id}: {exc}")
    for label, step in _steps:
        report.other.extend(f"{label}: {item}" for item in step(repair))
    return report


def reconcile_in_background(attempts: int = 5) -> threading.Thread:
    """
    Reconcile the warehouse on a thread of its own, logging what was done. A
    worker may start while the database is still coming up (a rolling
    restart during its restart): failures are retried with a growing pause.
    """

    def run() -> None:
        pause = 1.0
        for attempt in range(1, attempts + 1):
            close_old_connections()
            try:
                report = reconcile_warehouse(repair=True)
            except Exception:  # noqa: BLE001 (the server runs on; the command can be run by hand)
                if attempt == attempts:
                    logger.exception(
                        "Reconciliation at start failed; run manage.py check_warehouse --repair"
                    )
                    return
                logger.warning("Reconciliation at start failed, retrying", exc_info=True)
                time.sleep(pause)
                pause *= 2
                continue
            finally:
                # This thread's own connections: nobody else will close them.
                connections.close_all()
            for line in report.lines():
                logger.warning("Reconciliation at start: %s", line)
            logger.info("Reconciliation at start finished: %d change(s)", report.changes)
            return

    thread = threading.Thread(target=run, name="attachments-reconcile", daemon=True)
    thread.start()
    return thread
