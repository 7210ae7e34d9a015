from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error

_POSITIVE_NUMBERS = (
    "WORKFLOWS_NODE_TIMEOUT",
    "WORKFLOWS_WATCH_DEBOUNCE",
    "WORKFLOWS_CONTROL_POLL_SECONDS",
    "WORKFLOWS_HEARTBEAT_SECONDS",
    "WORKFLOWS_HEARTBEAT_TIMEOUT",
)
_OPTIONAL_COUNTS = (
    "WORKFLOWS_NODE_CPU_SECONDS",
    "WORKFLOWS_NODE_MEMORY_BYTES",
    "WORKFLOWS_HUMAN_INPUT_TIMEOUT",
)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    directory = getattr(settings, "WORKFLOWS_DIR", None)
    if (
        directory is not None
        and not isinstance(directory, str)
        and not hasattr(directory, "__fspath__")
    ):
        errors.append(
            Error("WORKFLOWS_DIR must be a path.", hint=f"Got {directory!r}.", id="workflows.E001")
        )
    for name in _POSITIVE_NUMBERS:
        value = getattr(settings, name, 1)
        if not _is_number(value) or value <= 0:
            errors.append(
                Error(
                    f"{name} must be a positive number.",
                    hint=f"Got {value!r}.",
                    id="workflows.E002",
                )
            )
    for name in _OPTIONAL_COUNTS:
        value = getattr(settings, name, None)
        if value is not None and (not _is_number(value) or value <= 0):
            errors.append(
                Error(
                    f"{name} must be None or a positive number.",
                    hint=f"Got {value!r}.",
                    id="workflows.E003",
                )
            )
    env = getattr(settings, "WORKFLOWS_NODE_ENV", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        errors.append(
            Error(
                "WORKFLOWS_NODE_ENV must map names to string values.",
                hint=f"Got {env!r}.",
                id="workflows.E004",
            )
        )
    return errors
