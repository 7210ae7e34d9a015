from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from .conf import PREFIX, conf


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _is_count(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int)


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    retention = conf.raw("EVENT_RETENTION")
    if retention is not None and (not _is_count(retention) or retention < 1):
        errors.append(
            Error(
                "ARTIFACTS_EVENT_RETENTION must be None or a positive number of events.",
                hint=f"Got {retention!r}.",
                id="artifacts.E001",
            )
        )
    for name in ("RECHECK_SECONDS", "MAX_WAIT_SECONDS", "SSE_KEEPALIVE_SECONDS", "SHUTDOWN_GRACE"):
        value = conf.raw(name)
        if not _is_number(value) or value <= 0:
            errors.append(
                Error(
                    f"{PREFIX}{name} must be a positive number of seconds.",
                    hint=f"Got {value!r}.",
                    id="artifacts.E002",
                )
            )
    page = conf.raw("MAX_PAGE_SIZE")
    if not _is_count(page) or page < 1:
        errors.append(
            Error(
                "ARTIFACTS_MAX_PAGE_SIZE must be a positive integer.",
                hint=f"Got {page!r}.",
                id="artifacts.E003",
            )
        )
    scan = conf.raw("MAX_SCAN_EVENTS")
    if not _is_count(scan) or (_is_count(page) and scan < page):
        errors.append(
            Error(
                "ARTIFACTS_MAX_SCAN_EVENTS must be an integer, at least ARTIFACTS_MAX_PAGE_SIZE.",
                hint=f"Got {scan!r}.",
                id="artifacts.E004",
            )
        )
    if hasattr(settings, "ARTIFACTS_FEED_MIDDLEWARE"):
        errors.append(
            Warning(
                "ARTIFACTS_FEED_MIDDLEWARE is no longer read: the feed, uploads and tus PATCHes "
                "share one header policy, ATTACHMENTS_FAST_PATH_MIDDLEWARE.",
                hint="Rename the setting to ATTACHMENTS_FAST_PATH_MIDDLEWARE.",
                id="artifacts.W002",
            )
        )
    if not getattr(settings, "CHANNEL_LAYERS", None):
        errors.append(
            Warning(
                "No channel layer is configured, so artifact-event waiters are only woken by "
                "their periodic re-check.",
                hint="Set CHANNEL_LAYERS (channels-redis when several processes serve the API).",
                id="artifacts.W001",
            )
        )
    return errors
