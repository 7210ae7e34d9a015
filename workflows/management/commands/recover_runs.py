from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from workflows.runs import fail_interrupted_runs


class Command(BaseCommand):
    help = (
        "Mark failed the workflow runs left running or waiting by a worker that is gone "
        "(its process died, or its heartbeat stopped). Run it when the server starts; "
        "each worker also does it before its first workflow request."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        failed = fail_interrupted_runs()
        for run_id in failed:
            self.stdout.write(f"{run_id}: failed (server restarted)")
        self.stdout.write(self.style.SUCCESS(f"{len(failed)} interrupted run(s) marked failed."))
