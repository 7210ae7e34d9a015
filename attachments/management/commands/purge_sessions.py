from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from attachments.models import ResumableUpload, Session
from attachments.resumable import purge_expired
from attachments.sessions import purge_session

_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(value: str) -> timedelta:
    match = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", value)
    if not match:
        raise CommandError(f"Ages look like 90m, 12h, 30d or 8w, not {value!r}.")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


class Command(BaseCommand):
    help = (
        "Purge sessions last updated longer ago than --older-than: their directories and "
        "records go, their ids answer 404. Resumable uploads past their expiry go too. "
        "Schedule it (cron, a systemd timer) as the warehouse's cleanup job."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", required=True, type=parse_age, help="e.g. 30d, 12h")
        parser.add_argument(
            "--dry-run", action="store_true", help="List what would be purged, purge nothing."
        )

    def handle(self, *args: Any, older_than: timedelta, dry_run: bool, **options: Any) -> None:
        cutoff = timezone.now() - older_than
        stale = Session.objects.live().filter(updated_at__lt=cutoff).order_by("updated_at")
        count = 0
        for session in stale.iterator():
            self.stdout.write(f"{'would purge' if dry_run else 'purging'} {session.session_id}")
            if not dry_run:
                purge_session(session)
            count += 1
        verb = "would be purged" if dry_run else "purged"
        self.stdout.write(self.style.SUCCESS(f"{count} session(s) {verb}."))
        expired = ResumableUpload.objects.filter(expires_at__lte=timezone.now())
        if dry_run:
            uploads = expired.count()
        else:
            uploads = purge_expired()
        self.stdout.write(f"{uploads} expired resumable upload(s) {verb}.")
