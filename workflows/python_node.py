"""
Running a python node as a subprocess of the server.

The node runs in the workspace, confined by `workflows.sandbox` (it sees its
session's workspace and the interpreter, not the server, its secrets or other
sessions), in its own process group (killed whole on timeout, cancel, or
when it ends, so nothing it started lingers), with CPU and memory limits and
an environment built from an allowlist: the server's secrets (SECRET_KEY,
DATABASE_URL, REDIS_URL, ...) never reach it. Its
stdout and stderr are streamed to the session's /ws clients as `node_log`
messages, line by line, in batches.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attachments

from . import node as node_module
from . import sandbox
from .conf import conf
from .loader import NodeSpec

# The directory holding the `attachments` and `workflows` packages, so that
# nodes can import AttachmentStore and the bootstrap without Django.
PACKAGES_ROOT = str(Path(attachments.__file__).resolve().parent.parent)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_LINE_CHARS = 8000
READ_BYTES = 1 << 16
STDERR_TAIL_LINES = 20
KILL_GRACE_SECONDS = 2.0

# Process groups of nodes alive in this process, killed at exit.
live_process_groups: set[int] = set()

LogSink = Callable[[str, list[str]], Awaitable[None]]


@dataclasses.dataclass
class NodeOutcome:
    status: str  # "completed", "failed" or "cancelled"
    exit_code: int | None = None
    error: str = ""
    output: Any = None


def node_environment(
    *,
    session_dir: Path,
    session_id: str,
    workspace: Path,
    run_id: str,
    node_id: str,
    scratch: Path,
    cpu_seconds: int | None,
    memory_bytes: int | None,
) -> dict[str, str]:
    """The whole environment of a node: nothing is inherited but PATH and the locale."""
    env = {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "HOME": str(workspace),
        "TMPDIR": str(scratch),
        "PYTHONPATH": PACKAGES_ROOT,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONIOENCODING": "utf-8",
        "MAC_SESSION_ID": session_id,
        "MAC_SESSION_DIR": str(session_dir),
        "MAC_WORKSPACE_DIR": str(workspace),
        "MAC_RUN_ID": run_id,
        "MAC_NODE_ID": node_id,
        node_module.CONTEXT_ENV: str(scratch / "context.json"),
        node_module.OUTPUT_ENV: str(scratch / "output.json"),
        node_module.ERROR_ENV: str(scratch / "error.txt"),
        node_module.PARENT_ENV: str(os.getpid()),
    }
    if cpu_seconds:
        env[node_module.CPU_ENV] = str(cpu_seconds)
    if memory_bytes:
        env[node_module.MEMORY_ENV] = str(memory_bytes)
    env.update(conf.NODE_ENV)
    return env


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def run_python_node(
    spec: NodeSpec,
    context: dict[str, Any],
    *,
    session_dir: Path,
    session_id: str,
    workspace: Path,
    run_id: str,
    cancelled: asyncio.Event,
    log: LogSink,
) -> NodeOutcome:
    """Run the node to its end, its timeout, or the cancel event."""
    timeout = spec.timeout or conf.NODE_TIMEOUT
    cpu_seconds = conf.NODE_CPU_SECONDS or math.ceil(timeout)
    # Scratch space outside the workspace: nothing here is an artifact.
    scratch = Path(tempfile.mkdtemp(prefix="mac-node-"))
    try:
        (scratch / "context.json").write_text(json.dumps(context), encoding="utf-8")
        script = spec.script
        if script is None:
            script = str(scratch / f"{spec.id}.py")
            Path(script).write_text(spec.code or "", encoding="utf-8")
        env = node_environment(
            session_dir=session_dir,
            session_id=session_id,
            workspace=workspace,
            run_id=run_id,
            node_id=spec.id,
            scratch=scratch,
            cpu_seconds=cpu_seconds,
            memory_bytes=conf.NODE_MEMORY_BYTES,
        )
        confined = sandbox.confine(
            [conf.PYTHON, "-P", "-m", "workflows.node", str(scratch / "context.json"), script],
            env,
            workspace=workspace,
            scratch=scratch,
            script=spec.script,
            network=spec.network,
            packages_root=PACKAGES_ROOT,
        )
        if confined.signal_exit_codes:
            # In its own PID namespace the node's parent is bwrap, not the server.
            confined.env.pop(node_module.PARENT_ENV, None)
        process = await asyncio.create_subprocess_exec(
            *confined.argv,
            cwd=workspace,
            env=confined.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            **confined.popen,
        )
        return await _supervise(
            process, timeout, cancelled, log, scratch, confined.signal_exit_codes
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def _supervise(
    process: asyncio.subprocess.Process,
    timeout: float,
    cancelled: asyncio.Event,
    log: LogSink,
    scratch: Path,
    signal_exit_codes: bool = False,
) -> NodeOutcome:
    pgid = process.pid  # start_new_session: the node leads its own group
    live_process_groups.add(pgid)
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    assert process.stdout is not None and process.stderr is not None
    pumps = [
        asyncio.ensure_future(_pump(process.stdout, "stdout", log, None)),
        asyncio.ensure_future(_pump(process.stderr, "stderr", log, tail)),
    ]
    exited = asyncio.ensure_future(process.wait())
    cancel_wait = asyncio.ensure_future(cancelled.wait())
    reason = ""
    try:
        done, _pending = await asyncio.wait(
            {exited, cancel_wait}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if exited not in done:
            reason = "cancelled" if cancel_wait in done else "timeout"
            kill_group(pgid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(exited), KILL_GRACE_SECONDS)
            except TimeoutError:
                pass
    finally:
        cancel_wait.cancel()
        # Whatever the node left behind in its group goes too.
        kill_group(pgid)
        live_process_groups.discard(pgid)
        if not exited.done():
            await exited
        for pump in pumps:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await asyncio.wait_for(pump, 5)
                except TimeoutError:
                    pass
    code = process.returncode
    if signal_exit_codes and code is not None and 128 < code < 128 + 65:
        code = -(code - 128)
    if reason == "cancelled":
        return NodeOutcome("cancelled", code, "Cancelled.")
    if reason == "timeout":
        return NodeOutcome("failed", code, f"Timed out after {timeout:g} s; the node was killed.")
    if code != 0:
        return NodeOutcome("failed", code, _failure(code, tail, scratch))
    try:
        raw = (scratch / "output.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        return NodeOutcome("completed", code)
    try:
        return NodeOutcome("completed", code, output=json.loads(raw))
    except ValueError:
        return NodeOutcome("failed", code, "set_output() wrote a value that is not JSON.")


def _failure(code: int | None, tail: collections.deque[str], scratch: Path) -> str:
    """
    How the node ended, and its own message: what it raised or passed to
    SystemExit, else its last line on stderr. Never a traceback: that (with
    whatever paths it names) stays in the node's log.
    """
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        what = f"Killed by {name}"
        if -code == signal.SIGXCPU:
            what += " (CPU time limit)"
    else:
        what = f"Exited with code {code}"
    try:
        message = (scratch / "error.txt").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        message = next((line.strip() for line in reversed(tail) if line.strip()), "")
    return f"{what}." + (f"\n{message}" if message else "")


async def _pump(
    stream: asyncio.StreamReader,
    name: str,
    log: LogSink,
    tail: collections.deque[str] | None,
) -> None:
    """Forward complete lines as they come, a batch per read; a very long line is cut."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    partial = ""
    while True:
        chunk = await stream.read(READ_BYTES)
        if not chunk:
            break
        text = partial + decoder.decode(chunk)
        *lines, partial = text.split("\n")
        if len(partial) > MAX_LINE_CHARS:
            lines.append(partial)
            partial = ""
        if lines:
            lines = [line.removesuffix("\r")[:MAX_LINE_CHARS] for line in lines]
            if tail is not None:
                tail.extend(lines)
            await log(name, lines)
    partial += decoder.decode(b"", final=True)
    if partial:
        if tail is not None:
            tail.append(partial[:MAX_LINE_CHARS])
        await log(name, [partial[:MAX_LINE_CHARS]])
