from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error
from django.utils.module_loading import import_string


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    warehouse = getattr(settings, "ATTACHMENTS_WAREHOUSE_DIR", "WareHouse")
    if not isinstance(warehouse, str | bytes) and not hasattr(warehouse, "__fspath__"):
        errors.append(
            Error(
                "ATTACHMENTS_WAREHOUSE_DIR must be a path.",
                hint=f"Got {warehouse!r}.",
                id="attachments.E001",
            )
        )
    max_bytes = getattr(settings, "ATTACHMENTS_MAX_UPLOAD_BYTES", None)
    if max_bytes is not None and (
        isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0
    ):
        errors.append(
            Error(
                "ATTACHMENTS_MAX_UPLOAD_BYTES must be None or a non-negative integer.",
                hint=f"Got {max_bytes!r}.",
                id="attachments.E002",
            )
        )
    for name, minimum in (("ATTACHMENTS_LOCK_TIMEOUT", 0), ("ATTACHMENTS_UPLOAD_BUFFER_BYTES", 1)):
        value = getattr(settings, name, minimum)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            errors.append(
                Error(
                    f"{name} must be a number of at least {minimum}.",
                    hint=f"Got {value!r}.",
                    id="attachments.E003",
                )
            )
    scanners = getattr(settings, "ATTACHMENTS_UPLOAD_SCANNERS", [])
    if not isinstance(scanners, list | tuple):
        errors.append(
            Error(
                "ATTACHMENTS_UPLOAD_SCANNERS must be a list of dotted paths or callables.",
                hint=f"Got {scanners!r}.",
                id="attachments.E004",
            )
        )
    else:
        for entry in scanners:
            try:
                scanner = import_string(entry) if isinstance(entry, str) else entry
            except ImportError as exc:
                scanner, problem = None, str(exc)
            else:
                problem = f"{entry!r} is not callable."
            if not callable(scanner):
                errors.append(
                    Error(
                        f"Upload scanner {entry!r} cannot be used.",
                        hint=problem,
                        id="attachments.E005",
                    )
                )
    unscannable = getattr(settings, "ATTACHMENTS_UNSCANNABLE", "refuse")
    if unscannable not in {"refuse", "keep"}:
        errors.append(
            Error(
                'ATTACHMENTS_UNSCANNABLE must be "refuse" or "keep".',
                hint=f"Got {unscannable!r}.",
                id="attachments.E006",
            )
        )
    return errors
