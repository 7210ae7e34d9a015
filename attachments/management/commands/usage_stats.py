from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Count, Sum
from django.template.defaultfilters import filesizeformat

from attachments.models import Attachment, Session


class Command(BaseCommand):
    help = (
        "Print usage statistics: sessions by status, attachments by kind and source, bytes stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Machine-readable output."
        )

    def handle(self, *args: Any, as_json: bool = False, **options: Any) -> None:
        live = Attachment.objects.filter(purged_at__isnull=True, session__purged_at__isnull=True)
        stats = {
            "sessions": {
                "live": Session.objects.live().count(),
                "purged": Session.objects.filter(purged_at__isnull=False).count(),
                "by_status": dict(
                    Session.objects.live().values_list("status").annotate(n=Count("id")).order_by()
                ),
            },
            "attachments": {
                "count": live.count(),
                "bytes": live.aggregate(total=Sum("size"))["total"] or 0,
                "by_kind": dict(live.values_list("kind").annotate(n=Count("id")).order_by()),
                "by_source": dict(live.values_list("source").annotate(n=Count("id")).order_by()),
            },
        }
        if as_json:
            self.stdout.write(json.dumps(stats, indent=2, sort_keys=True))
            return
        sessions, files = stats["sessions"], stats["attachments"]
        self.stdout.write(f"Sessions: {sessions['live']} live, {sessions['purged']} purged")
        for status, n in sorted(sessions["by_status"].items()):
            self.stdout.write(f"  {status}: {n}")
        self.stdout.write(f"Attachments: {files['count']}, {filesizeformat(files['bytes'])}")
        for label in ("by_kind", "by_source"):
            for key, n in sorted(files[label].items()):
                self.stdout.write(f"  {key}: {n}")
