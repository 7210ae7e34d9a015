"""Other processes, as the kernel shows them to the tests."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Whether `pid` is still running; a zombie still answers to signals, but it has stopped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
