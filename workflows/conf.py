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
from typing import Any

from django.conf import settings

from .workspace import DEFAULT_IGNORED_DIRS

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


PREFIX = "WORKFLOWS_"
# Each setting's default, which `conf` and the system checks (`workflows.checks`) share.
DEFAULTS: dict[str, Any] = {
    "DIR": None,
    "PYTHON": None,
    "NODE_TIMEOUT": 300,
    "NODE_CPU_SECONDS": None,
    "NODE_MEMORY_BYTES": 2 << 30,
    "NODE_ENV": {},
    "SANDBOX": "auto",
    "SANDBOX_BWRAP": "bwrap",
    "SANDBOX_USER": "",
    "HUMAN_INPUT_TIMEOUT": None,
    "WATCH_WORKSPACE": True,
    "WATCH_DEBOUNCE": 0.5,
    "WORKSPACE_IGNORED_DIRS": DEFAULT_IGNORED_DIRS,
    "CONTROL_POLL_SECONDS": 2,
    "HEARTBEAT_SECONDS": 10,
    "HEARTBEAT_TIMEOUT": 60,
}


class Settings:
    def raw(self, name: str) -> Any:
        """The setting as the project gives it (unchecked), or its default."""
        return getattr(settings, PREFIX + name, DEFAULTS[name])

    @property
    def DIR(self) -> Path:
        return Path(self.raw("DIR") or EXAMPLES_DIR).absolute()

    @property
    def PYTHON(self) -> str:
        return str(self.raw("PYTHON") or sys.executable)

    @property
    def NODE_TIMEOUT(self) -> float:
        return float(self.raw("NODE_TIMEOUT"))

    @property
    def NODE_CPU_SECONDS(self) -> int | None:
        value = self.raw("NODE_CPU_SECONDS")
        return None if value is None else int(value)

    @property
    def NODE_MEMORY_BYTES(self) -> int | None:
        return self.raw("NODE_MEMORY_BYTES")

    @property
    def NODE_ENV(self) -> dict[str, str]:
        return dict(self.raw("NODE_ENV"))

    @property
    def SANDBOX(self) -> str:
        return str(self.raw("SANDBOX"))

    @property
    def SANDBOX_BWRAP(self) -> str:
        return str(self.raw("SANDBOX_BWRAP"))

    @property
    def SANDBOX_USER(self) -> str:
        return str(self.raw("SANDBOX_USER") or "")

    @property
    def HUMAN_INPUT_TIMEOUT(self) -> float | None:
        value = self.raw("HUMAN_INPUT_TIMEOUT")
        return None if value is None else float(value)

    @property
    def WATCH_WORKSPACE(self) -> bool:
        return bool(self.raw("WATCH_WORKSPACE"))

    @property
    def WATCH_DEBOUNCE(self) -> float:
        return float(self.raw("WATCH_DEBOUNCE"))

    @property
    def WORKSPACE_IGNORED_DIRS(self) -> frozenset[str]:
        return frozenset(self.raw("WORKSPACE_IGNORED_DIRS"))

    @property
    def CONTROL_POLL_SECONDS(self) -> float:
        return float(self.raw("CONTROL_POLL_SECONDS"))

    @property
    def HEARTBEAT_SECONDS(self) -> float:
        return float(self.raw("HEARTBEAT_SECONDS"))

    @property
    def HEARTBEAT_TIMEOUT(self) -> float:
        return float(self.raw("HEARTBEAT_TIMEOUT"))


conf = Settings()
