from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.utils.module_loading import import_string

from .conf import conf

SENDFILE_HEADERS = ("X-Accel-Redirect", "X-Sendfile")
ACCESS_POLICIES = ("token", "open")
# RFC 7518 3.2: an HS256 key must be at least as long as the hash output.
MIN_JWT_SECRET_BYTES = 32


def _is_whole_number(value: object, minimum: int, maximum: int | None = None) -> bool:
    """An int (not a bool, which Python counts as one) within the bounds."""
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return value >= minimum and (maximum is None or value <= maximum)


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    warehouse = conf.raw("WAREHOUSE_DIR")
    if not isinstance(warehouse, str | bytes) and not hasattr(warehouse, "__fspath__"):
        errors.append(
            Error(
                "ATTACHMENTS_WAREHOUSE_DIR must be a path.",
                hint=f"Got {warehouse!r}.",
                id="attachments.E001",
            )
        )
    for name in ("MAX_UPLOAD_BYTES", "SESSION_MAX_BYTES", "SESSION_MAX_FILES"):
        limit = conf.raw(name)
        if limit is not None and (not _is_whole_number(limit, 0)):
            errors.append(
                Error(
                    f"ATTACHMENTS_{name} must be None or a non-negative integer.",
                    hint=f"Got {limit!r}.",
                    id="attachments.E002",
                )
            )
    for name, minimum in (("UPLOAD_BUFFER_BYTES", 1),):
        value = conf.raw(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            errors.append(
                Error(
                    f"ATTACHMENTS_{name} must be a number of at least {minimum}.",
                    hint=f"Got {value!r}.",
                    id="attachments.E003",
                )
            )
    scanners = conf.raw("UPLOAD_SCANNERS")
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
    unscannable = conf.raw("UNSCANNABLE")
    if unscannable not in {"refuse", "keep"}:
        errors.append(
            Error(
                'ATTACHMENTS_UNSCANNABLE must be "refuse" or "keep".',
                hint=f"Got {unscannable!r}.",
                id="attachments.E006",
            )
        )
    inline_max = conf.raw("INLINE_DATA_URI_MAX_BYTES")
    if not _is_whole_number(inline_max, 0):
        errors.append(
            Error(
                "ATTACHMENTS_INLINE_DATA_URI_MAX_BYTES must be an integer of at least 0 (0: off).",
                hint=f"Got {inline_max!r}.",
                id="attachments.E007",
            )
        )
    level = conf.raw("ZIP_COMPRESS_LEVEL")
    if not _is_whole_number(level, 1, 9):
        errors.append(
            Error(
                "ATTACHMENTS_ZIP_COMPRESS_LEVEL must be an integer from 1 to 9.",
                hint=f"Got {level!r}; use compress=false on the request for a stored zip.",
                id="attachments.E010",
            )
        )
    errors.extend(_check_sendfile())
    errors.extend(_check_fast_path_middleware())
    errors.extend(_check_access())
    return errors


# Django's mark of a key that must not be used in production (security.W009).
INSECURE_KEY_PREFIX = "django-insecure-"


def _check_access() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    policy = conf.raw("ACCESS_POLICY")
    if policy not in ACCESS_POLICIES:
        messages.append(
            Error(
                'ATTACHMENTS_ACCESS_POLICY must be "token" or "open".',
                hint=f"Got {policy!r}.",
                id="attachments.E020",
            )
        )
    elif policy == "open":
        messages.append(
            Warning(
                'ATTACHMENTS_ACCESS_POLICY is "open": anyone who knows a session id reaches '
                "its files.",
                hint="Use it only behind a proxy that authorises every request; "
                'otherwise set it to "token" (MAC_ACCESS_POLICY=token).',
                id="attachments.W020",
            )
        )
    secret = conf.raw("JWT_SECRET")
    if (
        secret is not None
        and secret != ""
        and (not isinstance(secret, str | bytes) or len(secret) < MIN_JWT_SECRET_BYTES)
    ):
        messages.append(
            Error(
                f"ATTACHMENTS_JWT_SECRET must be a string of at least {MIN_JWT_SECRET_BYTES} "
                "characters, or None to refuse JWTs.",
                hint="e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))'",
                id="attachments.E021",
            )
        )
    for name in ("JWT_ISSUER", "JWT_AUDIENCE"):
        value = conf.raw(name)
        if value is not None and not isinstance(value, str):
            messages.append(
                Error(
                    f"ATTACHMENTS_{name} must be a string or None.",
                    hint=f"Got {value!r}.",
                    id="attachments.E022",
                )
            )
    max_age = conf.raw("SIGNED_LINK_MAX_AGE")
    if not _is_whole_number(max_age, 1):
        messages.append(
            Error(
                "ATTACHMENTS_SIGNED_LINK_MAX_AGE must be a number of seconds of at least 1.",
                hint=f"Got {max_age!r}.",
                id="attachments.E023",
            )
        )
    key = str(getattr(settings, "SECRET_KEY", ""))
    if not settings.DEBUG and key.startswith(INSECURE_KEY_PREFIX):
        # Signed links and Django sessions are only as secret as this key: a
        # placeholder shipped with the code lets anyone forge a link.
        messages.append(
            Error(
                "SECRET_KEY is a placeholder: anyone could forge signed links with it.",
                hint="Set MAC_SECRET_KEY (the same on every worker), or let scripts/serve "
                "generate a key file; placeholders are accepted only with DEBUG.",
                id="attachments.E030",
            )
        )
    rate = conf.raw("SESSION_CREATE_RATE")
    if rate is not None and rate != "" and not _is_rate(rate):
        messages.append(
            Error(
                'ATTACHMENTS_SESSION_CREATE_RATE must be None or a rate like "30/minute".',
                hint=f"Got {rate!r}; the period is second, minute, hour or day.",
                id="attachments.E024",
            )
        )
    return messages


def _is_rate(value: object) -> bool:
    if not isinstance(value, str) or value.count("/") != 1:
        return False
    count, period = value.split("/")
    return count.isdigit() and int(count) > 0 and period[:1] in {"s", "m", "h", "d"}


def _check_fast_path_middleware() -> list[CheckMessage]:
    try:
        for path in conf.raw("FAST_PATH_MIDDLEWARE"):
            import_string(path)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        return [
            Error(
                "ATTACHMENTS_FAST_PATH_MIDDLEWARE must list importable middleware (dotted paths).",
                hint=str(exc),
                id="attachments.E011",
            )
        ]
    return []


def _check_sendfile() -> list[CheckMessage]:
    header = conf.raw("SENDFILE_HEADER") or None
    root = conf.raw("SENDFILE_ROOT")
    if header is not None and header not in SENDFILE_HEADERS:
        return [
            Error(
                "ATTACHMENTS_SENDFILE_HEADER must be None, 'X-Accel-Redirect' or 'X-Sendfile'.",
                hint=f"Got {header!r}.",
                id="attachments.E008",
            )
        ]
    if root is not None and not isinstance(root, str) and not hasattr(root, "__fspath__"):
        return [
            Error(
                "ATTACHMENTS_SENDFILE_ROOT must be a string.",
                hint=f"Got {root!r}.",
                id="attachments.E009",
            )
        ]
    if header == "X-Accel-Redirect" and not (isinstance(root, str) and root.startswith("/")):
        return [
            Error(
                "X-Accel-Redirect needs ATTACHMENTS_SENDFILE_ROOT: the internal location, "
                "starting with '/', under which nginx serves the warehouse.",
                hint=f"Got {root!r}; e.g. '/_warehouse/' with `location /_warehouse/ "
                "{ internal; alias /srv/WareHouse/; }`.",
                id="attachments.E009",
            )
        ]
    return []
