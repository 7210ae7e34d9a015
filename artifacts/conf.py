"""
The artifacts app's settings, each read live from Django settings so that
`override_settings` and a host project's `settings.py` both simply work.

    ARTIFACTS_EVENT_RETENTION       events kept per session; older ones are dropped as new
                                    ones arrive, and cursors into the dropped part get 410
                                    `cursor_expired`. None keeps everything (None)
    ARTIFACTS_RECHECK_SECONDS       how often waiters re-read the database in case a
                                    channel-layer notification was lost (1.0)
    ARTIFACTS_MAX_WAIT_SECONDS      the largest `wait_seconds` a long-poll accepts (60)
    ARTIFACTS_MAX_PAGE_SIZE         the largest `limit`, and the default one (200)
    ARTIFACTS_MAX_SCAN_EVENTS       events one page may examine when filters drop most of
                                    them; the page then ends early with `has_more` (10000)
    ARTIFACTS_SSE_KEEPALIVE_SECONDS quiet time after which an event stream sends a
                                    keep-alive comment (15)
    ARTIFACTS_SHUTDOWN_GRACE        seconds from SIGTERM to the process's exit: live clients
                                    are let go at once, other requests get the rest (10)

The feed's fast path takes its response headers from the attachments app's
header policy (`ATTACHMENTS_FAST_PATH_MIDDLEWARE`, which replaced
ARTIFACTS_FEED_MIDDLEWARE: a check warns where the old name is still set).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

PREFIX = "ARTIFACTS_"
# Each setting's default, which `conf` and the system checks (`artifacts.checks`) share.
DEFAULTS: dict[str, Any] = {
    "EVENT_RETENTION": None,
    "RECHECK_SECONDS": 1.0,
    "MAX_WAIT_SECONDS": 60,
    "MAX_PAGE_SIZE": 200,
    "MAX_SCAN_EVENTS": 10_000,
    "SSE_KEEPALIVE_SECONDS": 15,
    "SHUTDOWN_GRACE": 10,
}


class Settings:
    def raw(self, name: str) -> Any:
        """The setting as the project gives it (unchecked), or its default."""
        return getattr(settings, PREFIX + name, DEFAULTS[name])

    @property
    def EVENT_RETENTION(self) -> int | None:
        return self.raw("EVENT_RETENTION")

    @property
    def RECHECK_SECONDS(self) -> float:
        return float(self.raw("RECHECK_SECONDS"))

    @property
    def MAX_WAIT_SECONDS(self) -> float:
        return float(self.raw("MAX_WAIT_SECONDS"))

    @property
    def MAX_PAGE_SIZE(self) -> int:
        return int(self.raw("MAX_PAGE_SIZE"))

    @property
    def MAX_SCAN_EVENTS(self) -> int:
        return int(self.raw("MAX_SCAN_EVENTS"))

    @property
    def SSE_KEEPALIVE_SECONDS(self) -> float:
        return float(self.raw("SSE_KEEPALIVE_SECONDS"))

    @property
    def SHUTDOWN_GRACE(self) -> float:
        return float(self.raw("SHUTDOWN_GRACE"))


conf = Settings()
