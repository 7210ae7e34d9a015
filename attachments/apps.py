from __future__ import annotations

import logging

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AttachmentsConfig(AppConfig):
    name = "attachments"
    verbose_name = _("Attachments")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks
        from django.core.signals import setting_changed

        from .checks import check_settings
        from .header_policy import forget_middleware

        checks.register(check_settings, checks.Tags.compatibility)
        # The fast paths' middleware reads settings when built: build it again.
        setting_changed.connect(forget_middleware, dispatch_uid="attachments.header_policy")
        warn_if_open()


def warn_if_open() -> None:
    """Log, in every process that loads the app, that sessions are guarded by their ids alone."""
    from .conf import conf

    if conf.ACCESS_POLICY == "open":
        logging.getLogger("attachments.access").warning(
            'ATTACHMENTS_ACCESS_POLICY is "open": any client that knows a session id reaches '
            "its files. Use it only behind a proxy that authorises every request "
            "(attachments.W020)."
        )
