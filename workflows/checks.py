from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Info, Warning

from . import sandbox
from .conf import PREFIX, conf

_POSITIVE_NUMBERS = (
    "NODE_TIMEOUT",
    "WATCH_DEBOUNCE",
    "CONTROL_POLL_SECONDS",
    "HEARTBEAT_SECONDS",
    "HEARTBEAT_TIMEOUT",
)
_OPTIONAL_COUNTS = ("NODE_CPU_SECONDS", "NODE_MEMORY_BYTES", "HUMAN_INPUT_TIMEOUT")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    directory = conf.raw("DIR")
    if (
        directory is not None
        and not isinstance(directory, str)
        and not hasattr(directory, "__fspath__")
    ):
        errors.append(
            Error("WORKFLOWS_DIR must be a path.", hint=f"Got {directory!r}.", id="workflows.E001")
        )
    for name in _POSITIVE_NUMBERS:
        value = conf.raw(name)
        if not _is_number(value) or value <= 0:
            errors.append(
                Error(
                    f"{PREFIX}{name} must be a positive number.",
                    hint=f"Got {value!r}.",
                    id="workflows.E002",
                )
            )
    for name in _OPTIONAL_COUNTS:
        value = conf.raw(name)
        if value is not None and (not _is_number(value) or value <= 0):
            errors.append(
                Error(
                    f"{PREFIX}{name} must be None or a positive number.",
                    hint=f"Got {value!r}.",
                    id="workflows.E003",
                )
            )
    env = conf.raw("NODE_ENV")
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


def check_sandbox(**kwargs: Any) -> list[CheckMessage]:
    """Which confinement python nodes get here: said always, a warning when there is none."""
    mode = conf.raw("SANDBOX")
    if mode not in sandbox.MODES:
        return [
            Error(
                f"WORKFLOWS_SANDBOX must be one of {', '.join(sandbox.MODES)}.",
                hint=f"Got {mode!r}.",
                id="workflows.E005",
            )
        ]
    chosen = sandbox.isolation()
    if chosen.kind == sandbox.NONE:
        return [
            Warning(
                "Python nodes run unconfined: they can read the server's secrets, "
                "its database and every session's files.",
                hint=f"{chosen.reason}. Install bubblewrap (Debian: bubblewrap), or set "
                "WORKFLOWS_SANDBOX_USER to an unprivileged user and run the server as root.",
                id="workflows.W010",
            )
        ]
    return [Info(f"Python nodes are confined: {chosen.reason}.", id="workflows.I010")]
