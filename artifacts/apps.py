"""Artifact events: the live feed of what changed in a session, its cursors and its broadcasts."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ArtifactsConfig(AppConfig):
    name = "artifacts"
    verbose_name = _("Artifacts")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from attachments.serializers import SessionSerializer

        from . import signals  # noqa: F401 (connects the receivers)
        from .checks import check_settings
        from .downloads import register as register_downloads
        from .feed import last_event_cursor

        checks.register(check_settings, checks.Tags.compatibility)
        # The downloads answer `art_` ids and the zip's `after=` from the event log.
        register_downloads()
        SessionSerializer.contributed_fields["last_event_cursor"] = last_event_cursor
