"""The node bootstrap (workflows.node), in a process of its own as the runner starts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workflows.python_node import node_environment


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_node_started_by_a_server_kept_on_one_cpu_uses_every_cpu(tmp_path: Path):
    allowed = os.sched_getaffinity(0)
    workspace, scratch = tmp_path / "session" / "code_workspace", tmp_path / "scratch"
    workspace.mkdir(parents=True)
    scratch.mkdir()
    (scratch / "context.json").write_text(json.dumps({"node_id": "n", "outputs": {}}))
    script = scratch / "node.py"
    script.write_text("import os\nset_output(sorted(os.sched_getaffinity(0)))\n")
    env = node_environment(
        session_dir=tmp_path / "session",
        session_id="s",
        workspace=workspace,
        run_id="r",
        node_id="n",
        scratch=scratch,
        cpu_seconds=None,
        memory_bytes=None,
    )
    # A node inherits its CPUs from the server thread that starts it: one, here.
    node = subprocess.run(
        ["taskset", "-c", str(min(allowed)), sys.executable, "-P", "-m", "workflows.node"]
        + [str(scratch / "context.json"), str(script)],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert node.returncode == 0, node.stderr
    assert set(json.loads((scratch / "output.json").read_text())) == allowed
