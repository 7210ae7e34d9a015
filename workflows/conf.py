"""
The workflows app's settings, each read live from Django settings.

    WORKFLOWS_DIR                  where workflow YAML files are (the shipped examples)
    WORKFLOWS_PYTHON               interpreter for python nodes (the server's own)
    WORKFLOWS_NODE_TIMEOUT         seconds a python node may run, unless it says otherwise (300)
    WORKFLOWS_NODE_CPU_SECONDS     CPU-time limit of a python node; None: its timeout (None)
    WORKFLOWS_NODE_MEMORY_BYTES    address-space limit of a python node; None: no limit (2 GiB)
    WORKFLOWS_NODE_ENV             extra environment variables for python nodes ({})
    WORKFLOWS_SANDBOX              how python nodes are confined: auto, bwrap, user, none (auto;
                                   see workflows.sandbox)
    WORKFLOWS_SANDBOX_BWRAP        the bubblewrap executable ("bwrap")
    WORKFLOWS_SANDBOX_USER         the unprivileged user nodes run as in `user` mode ("")
    WORKFLOWS_HUMAN_INPUT_TIMEOUT  seconds a human node waits; None: no limit (None)
    WORKFLOWS_WATCH_WORKSPACE      watch the workspace while nodes run (True)
    WORKFLOWS_WATCH_DEBOUNCE       seconds from a change to its report, mid-node (0.5)
    WORKFLOWS_WORKSPACE_IGNORED_DIRS  directory names never reported (see workflows.workspace)
    WORKFLOWS_CONTROL_POLL_SECONDS how often a run checks the database for cancel and input (2)
    WORKFLOWS_HEARTBEAT_SECONDS    how often a run records that its worker is alive (10)
    WORKFLOWS_HEARTBEAT_TIMEOUT    silence after which another worker declares a run dead (60)
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.conf import settings

from .workspace import DEFAULT_IGNORED_DIRS

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


class Settings:
    @property
    def DIR(self) -> Path:
        return Path(getattr(settings, "WORKFLOWS_DIR", None) or EXAMPLES_DIR).absolute()

    @property
    def PYTHON(self) -> str:
        return str(getattr(settings, "WORKFLOWS_PYTHON", None) or sys.executable)

    @property
    def NODE_TIMEOUT(self) -> float:
        return float(getattr(settings, "WORKFLOWS_NODE_TIMEOUT", 300))

    @property
    def NODE_CPU_SECONDS(self) -> int | None:
        value = getattr(settings, "WORKFLOWS_NODE_CPU_SECONDS", None)
        return None if value is None else int(value)

    @property
    def NODE_MEMORY_BYTES(self) -> int | None:
        return getattr(settings, "WORKFLOWS_NODE_MEMORY_BYTES", 2 << 30)

    @property
    def NODE_ENV(self) -> dict[str, str]:
        return dict(getattr(settings, "WORKFLOWS_NODE_ENV", {}))

    @property
    def SANDBOX(self) -> str:
        return str(getattr(settings, "WORKFLOWS_SANDBOX", "auto"))

    @property
    def SANDBOX_BWRAP(self) -> str:
        return str(getattr(settings, "WORKFLOWS_SANDBOX_BWRAP", "bwrap"))

    @property
    def SANDBOX_USER(self) -> str:
        return str(getattr(settings, "WORKFLOWS_SANDBOX_USER", "") or "")

    @property
    def HUMAN_INPUT_TIMEOUT(self) -> float | None:
        value = getattr(settings, "WORKFLOWS_HUMAN_INPUT_TIMEOUT", None)
        return None if value is None else float(value)

    @property
    def WATCH_WORKSPACE(self) -> bool:
        return bool(getattr(settings, "WORKFLOWS_WATCH_WORKSPACE", True))

    @property
    def WATCH_DEBOUNCE(self) -> float:
        return float(getattr(settings, "WORKFLOWS_WATCH_DEBOUNCE", 0.5))

    @property
    def WORKSPACE_IGNORED_DIRS(self) -> frozenset[str]:
        return frozenset(
            getattr(settings, "WORKFLOWS_WORKSPACE_IGNORED_DIRS", DEFAULT_IGNORED_DIRS)
        )

    @property
    def CONTROL_POLL_SECONDS(self) -> float:
        return float(getattr(settings, "WORKFLOWS_CONTROL_POLL_SECONDS", 2))

    @property
    def HEARTBEAT_SECONDS(self) -> float:
        return float(getattr(settings, "WORKFLOWS_HEARTBEAT_SECONDS", 10))

    @property
    def HEARTBEAT_TIMEOUT(self) -> float:
        return float(getattr(settings, "WORKFLOWS_HEARTBEAT_TIMEOUT", 60))


conf = Settings()
