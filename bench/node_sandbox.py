"""
What the bubblewrap sandbox costs a python node: the time to start the
interpreter and import the node's packages, confined and unconfined, as a
ratio. Runs here, in a scratch workspace; prints the medians and the ratio.

    .venv/bin/python bench/node_sandbox.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "macproject.settings")

import django  # noqa: E402

django.setup()

from workflows import sandbox  # noqa: E402
from workflows.python_node import PACKAGES_ROOT  # noqa: E402

PROGRAM = "import attachments.store, workflows.node"


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    chosen = sandbox.isolation()
    if chosen.kind != sandbox.BWRAP:
        raise SystemExit(f"bubblewrap is not in force here: {chosen.reason}")
    scratch = Path(tempfile.mkdtemp(prefix="node-sandbox-bench-"))
    try:
        workspace = scratch / "code_workspace"
        workspace.mkdir()
        python = [sys.executable, "-P", "-c", PROGRAM]
        plain_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": PACKAGES_ROOT}
        confined = sandbox.confine(
            python,
            dict(plain_env),
            workspace=workspace,
            scratch=scratch,
            script=None,
            network=False,
            packages_root=PACKAGES_ROOT,
        )
        plain, boxed = [], []
        for _ in range(args.runs):
            plain.append(timed(python, plain_env, workspace))
            boxed.append(timed(confined.argv, confined.env, workspace))
        plain_ms = statistics.median(plain) * 1000
        boxed_ms = statistics.median(boxed) * 1000
        print(f"runs: {args.runs}")
        print(f"unconfined start, median: {plain_ms:.1f} ms")
        print(f"bubblewrap start, median: {boxed_ms:.1f} ms")
        print(f"ratio confined / unconfined: {boxed_ms / plain_ms:.2f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
