"""
The code reads one way: every Python file passes the project's lint rules
and is formatted as `ruff format` writes it (the rules are in
pyproject.toml). A failure prints what to change.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUFF = [sys.executable, "-m", "ruff"]


@pytest.mark.parametrize(
    "command", [["check", "--no-cache"], ["format", "--check", "--diff", "--no-cache"]]
)
def test_the_code_passes_ruff(command):
    result = subprocess.run([*RUFF, *command, "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
