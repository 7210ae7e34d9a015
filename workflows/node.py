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
import traceback
from typing import Any

from attachments.store import AttachmentStore

CONTEXT_ENV = "MAC_CONTEXT_FILE"
OUTPUT_ENV = "MAC_OUTPUT_FILE"
CPU_ENV = "MAC_NODE_CPU_SECONDS"
MEMORY_ENV = "MAC_NODE_MEMORY_BYTES"
PARENT_ENV = "MAC_PARENT_PID"
ERROR_ENV = "MAC_ERROR_FILE"
MAX_ERROR_CHARS = 2000

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


def use_every_cpu() -> None:
    """
    Let the node run on every CPU the machine allows. It inherits the CPUs
    of the server thread that started it, and a server may keep its own
    threads on one (MAC_SERVER_CPU): the node's work is not the server's.
    """
    if not hasattr(os, "sched_setaffinity"):
        return
    try:
        # CPUs outside the cgroup's set are left out by the kernel itself.
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    except OSError:
        pass


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
    use_every_cpu()
    context_file, script = argv[1], argv[2]
    os.environ[CONTEXT_ENV] = context_file
    context = load_context()
    sys.argv = [script]
    sys.path.insert(0, os.path.dirname(script))
    try:
        runpy.run_path(
            script,
            init_globals={
                "_context": context,
                "attachment_store": get_store(),
                "set_output": set_output,
            },
            run_name="__main__",
        )
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            raise
        _report_error(str(exc.code))
        raise SystemExit(1) from None
    except BaseException as exc:  # noqa: BLE001 - whatever the script raised is its failure
        _print_script_traceback(exc, script)
        _report_error("".join(traceback.format_exception_only(exc)).strip())
        raise SystemExit(1) from None


def _report_error(message: str) -> None:
    """The node's own message, which the run shows as its error (no traceback, no paths)."""
    target = os.environ.get(ERROR_ENV)
    if not target:
        return
    try:
        with open(target, "w", encoding="utf-8") as sink:
            sink.write(message[:MAX_ERROR_CHARS])
    except OSError:
        pass


def _print_script_traceback(exc: BaseException, script: str) -> None:
    """The traceback to stderr (the node's log), from the script's own frames on."""
    summary = traceback.TracebackException.from_exception(exc)
    frames = list(summary.stack)
    for index, frame in enumerate(frames):
        if frame.filename == script:
            frames = frames[index:]
            break
    summary.stack = traceback.StackSummary.from_list(frames)
    sys.stderr.write("".join(summary.format()))
    sys.stderr.flush()


if __name__ == "__main__":
    main(sys.argv)
