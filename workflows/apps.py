from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = _("Workflows")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from artifacts.consumers import register_message_handler
        from attachments.reconcile import add_step

        from . import socket_messages
        from .checks import check_sandbox, check_settings
        from .runs import interrupted_runs

        checks.register(check_settings, checks.Tags.compatibility)
        checks.register(check_sandbox, checks.Tags.security)
        # A worker's start (and check_warehouse) also fails runs a dead worker left.
        add_step("run left in flight by a stopped worker", interrupted_runs)
        # The run messages of the session's control socket, which artifacts routes.
        register_message_handler("human_input", socket_messages.human_input)
