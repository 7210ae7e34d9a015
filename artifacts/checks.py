from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.utils.module_loading import import_string


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _is_count(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int)


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    retention = getattr(settings, "ARTIFACTS_EVENT_RETENTION", None)
    if retention is not None and (not _is_count(retention) or retention < 1):
        errors.append(
            Error(
                "ARTIFACTS_EVENT_RETENTION must be None or a positive number of events.",
                hint=f"Got {retention!r}.",
                id="artifacts.E001",
            )
        )
    for name, default in (
        ("ARTIFACTS_RECHECK_SECONDS", 1.0),
        ("ARTIFACTS_MAX_WAIT_SECONDS", 60),
        ("ARTIFACTS_SSE_KEEPALIVE_SECONDS", 15),
        ("ARTIFACTS_SHUTDOWN_GRACE", 10),
    ):
        value = getattr(settings, name, default)
        if not _is_number(value) or value <= 0:
            errors.append(
                Error(
                    f"{name} must be a positive number of seconds.",
                    hint=f"Got {value!r}.",
                    id="artifacts.E002",
                )
            )
    page = getattr(settings, "ARTIFACTS_MAX_PAGE_SIZE", 200)
    if not _is_count(page) or page < 1:
        errors.append(
            Error(
                "ARTIFACTS_MAX_PAGE_SIZE must be a positive integer.",
                hint=f"Got {page!r}.",
                id="artifacts.E003",
            )
        )
    scan = getattr(settings, "ARTIFACTS_MAX_SCAN_EVENTS", 10_000)
    if not _is_count(scan) or (_is_count(page) and scan < page):
        errors.append(
            Error(
                "ARTIFACTS_MAX_SCAN_EVENTS must be an integer, at least ARTIFACTS_MAX_PAGE_SIZE.",
                hint=f"Got {scan!r}.",
                id="artifacts.E004",
            )
        )
    feed_middleware = getattr(settings, "ARTIFACTS_FEED_MIDDLEWARE", None)
    if feed_middleware is not None:
        try:
            for path in feed_middleware:
                import_string(path)
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            errors.append(
                Error(
                    "ARTIFACTS_FEED_MIDDLEWARE must list importable middleware (dotted paths).",
                    hint=str(exc),
                    id="artifacts.E005",
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
