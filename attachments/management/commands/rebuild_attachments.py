from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from attachments.exceptions import ApiError
from attachments.manifest_sync import rebuild_from_warehouse, sync_session_from_manifest
from attachments.sessions import get_live_session


class Command(BaseCommand):
    help = (
        "Rebuild the attachment records from the manifests on disk. The manifests are the "
        "source of truth; running the command twice changes nothing the second time."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("session_ids", nargs="*", help="Only these sessions (default: all).")

    def handle(self, *args: Any, session_ids: list[str], **options: Any) -> None:
        if session_ids:
            try:
                sessions = [get_live_session(session_id) for session_id in session_ids]
            except ApiError as exc:
                raise CommandError(str(exc.detail)) from exc
            reports = {s.session_id: sync_session_from_manifest(s) for s in sessions}
        else:
            reports = rebuild_from_warehouse()
        for session_id, report in reports.items():
            self.stdout.write(
                f"{session_id}: {report.created} created, {report.updated} updated, "
                f"{report.removed} removed"
            )
        self.stdout.write(self.style.SUCCESS(f"{len(reports)} session(s) rebuilt."))
