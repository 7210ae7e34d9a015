"""
What a python node sees, and the bootstrap that runs it. No Django import:
this module runs inside the node's own process.

The runner starts `python -m workflows.node <context.json> <script>` with
the workspace as its working directory. The bootstrap applies the resource
limits, then runs the script as `__main__` with these globals:

    _context          the run's context (see below)
    attachment_store  an `AttachmentStore` for the session
    set_output        pass a JSON value on to the next nodes

`_context` holds `task_prompt`, `variables`, `attachments` (each with its
absolute `path`), `python_workspace_root` (the workspace), `session_id`,
`session_dir`, `run_id`, `node_id`, `workflow`, `outputs` (earlier nodes'
outputs by node id), `inputs` (human inputs by node id) and `human_input`
(the latest). A module the script imports can get the same through
`load_context()`, `get_store()` and `set_output()` here.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import runpy
import signal
import sys
from typing import Any

from attachments.store import AttachmentStore

CONTEXT_ENV = "MAC_CONTEXT_FILE"
OUTPUT_ENV = "MAC_OUTPUT_FILE"
CPU_ENV = "MAC_NODE_CPU_SECONDS"
MEMORY_ENV = "MAC_NODE_MEMORY_BYTES"
PARENT_ENV = "MAC_PARENT_PID"

_PR_SET_PDEATHSIG = 1


def load_context() -> dict[str, Any]:
    with open(os.environ[CONTEXT_ENV], encoding="utf-8") as source:
        context: dict[str, Any] = json.load(source)
    return context


def get_store() -> AttachmentStore:
    return AttachmentStore.from_env()


def set_output(value: Any) -> None:
    """Hand a JSON-serialisable value to the nodes that come after this one."""
    payload = json.dumps(value)
    with open(os.environ[OUTPUT_ENV], "w", encoding="utf-8") as target:
        target.write(payload)


def _apply_limits() -> None:
    cpu = os.environ.get(CPU_ENV)
    if cpu:
        seconds = int(cpu)
        # Past the soft limit the kernel sends SIGXCPU, past the hard one SIGKILL.
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
    memory = os.environ.get(MEMORY_ENV)
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (int(memory), int(memory)))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _die_with_parent() -> None:
    """A server that crashes takes its nodes with it (Linux), instead of leaving them running."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    expected = os.environ.get(PARENT_ENV)
    if expected and os.getppid() != int(expected):
        os._exit(137)  # the parent died before prctl took effect


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit("usage: python -m workflows.node <context.json> <script.py>")
    _die_with_parent()
    _apply_limits()
    context_file, script = argv[1], argv[2]
    os.environ[CONTEXT_ENV] = context_file
    context = load_context()
    sys.argv = [script]
    sys.path.insert(0, os.path.dirname(script))
    runpy.run_path(
        script,
        init_globals={
            "_context": context,
            "attachment_store": get_store(),
            "set_output": set_output,
        },
        run_name="__main__",
    )


if __name__ == "__main__":
    main(sys.argv)
