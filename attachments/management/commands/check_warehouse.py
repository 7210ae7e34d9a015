from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from attachments.reconcile import reconcile_warehouse


class Command(BaseCommand):
    help = (
        "Find what a crash can leave in the warehouse (interrupted uploads in staging, "
        "unfinished manifest saves, files or rows without the rest of their record, "
        "half-finished purges) and, with --repair, put it right. Safe while the server runs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--repair", action="store_true", help="Fix what is found.")

    def handle(self, *args: Any, repair: bool, **options: Any) -> None:
        report = reconcile_warehouse(repair=repair)
        for line in report.lines():
            self.stdout.write(line)
        verb = "repaired" if repair else "found (run with --repair to fix)"
        summary = f"{report.changes} problem(s) {verb}."
        if report.errors:
            self.stderr.write(self.style.ERROR(f"{summary} {len(report.errors)} error(s)."))
            raise SystemExit(1)
        self.stdout.write(self.style.SUCCESS(summary) if report.changes == 0 or repair else summary)
