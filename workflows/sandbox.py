"""
How a python node is confined: what it can see of the host, and as whom it runs.

A node is user code. Without confinement it runs as the server's OS user and
reads what that user reads: `/proc/<server pid>/environ` (the secret key, the
JWT secret, the database URL), `/proc/<pid>/mem`, every session's files, the
SQLite database. Three mechanisms, chosen by `WORKFLOWS_SANDBOX`:

- `bwrap` (bubblewrap): the node runs in fresh mount, PID, IPC, UTS, cgroup,
  user and network namespaces with every capability dropped. Its filesystem
  is built from nothing: `/usr` and the interpreter read-only, the two
  packages a node imports (`attachments`, `workflows`) read-only, its
  session's `code_workspace` and its scratch directory read-write, a private
  `/proc`, `/dev` and `/tmp`. No other session, no server process, no
  database file, no network (unless the node declares `network: true`).
- `user`: where namespaces are unavailable, a server running as root starts
  the node as `WORKFLOWS_SANDBOX_USER`, an unprivileged user; the workspace
  is handed to that user first. The kernel then keeps it out of the server's
  `/proc` entries and out of files only the server's user may read. It still
  sees what any local user may (world-readable files, the network, the
  workspaces of other sessions whose ids it knows), so it is the weaker one.
- `none`: no confinement (the system check `workflows.W010` says so).

`auto` (the default) takes `bwrap` when it works on this host, else `user`
when a user is configured and the server may switch to it, else `none`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .conf import conf

BWRAP = "bwrap"
USER = "user"
NONE = "none"
AUTO = "auto"
MODES = (AUTO, BWRAP, USER, NONE)

# Where the node's own packages are mounted inside a bwrap sandbox: not the
# project directory, which also holds the database and the warehouse.
PACKAGES_MOUNT = "/opt/mac/packages"
PACKAGES = ("attachments", "workflows")

# Read-only bits of /etc that the interpreter and the standard library use.
_ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/magic",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/alternatives",
    "/etc/nsswitch.conf",
)
_NETWORK_ETC_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/gai.conf")


@dataclasses.dataclass(frozen=True)
class Isolation:
    """The mechanism in force: `kind` is `bwrap`, `user` or `none`; `reason` says why."""

    kind: str
    reason: str
    bwrap: str = ""
    user: str = ""


@functools.lru_cache(maxsize=8)
def _bwrap_works(executable: str) -> str:
    """'' when `bwrap --unshare-all` runs here, else what went wrong."""
    try:
        probe = subprocess.run(
            [executable, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if probe.returncode != 0:
        return probe.stderr.decode(errors="replace").strip() or f"exit code {probe.returncode}"
    return ""


def _user_problem(name: str) -> str:
    """'' when the server can start nodes as `name`, else why not."""
    if not name:
        return "WORKFLOWS_SANDBOX_USER is not set"
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return f"no user {name!r}"
    if entry.pw_uid == 0:
        return "WORKFLOWS_SANDBOX_USER must not be root"
    if os.geteuid() != 0:
        return "the server must run as root to switch nodes to another user"
    if entry.pw_uid == os.geteuid():
        return "WORKFLOWS_SANDBOX_USER is the server's own user"
    return ""


def isolation() -> Isolation:
    """The confinement python nodes get on this host, with the settings in force."""
    mode = conf.SANDBOX
    executable = shutil.which(conf.SANDBOX_BWRAP) or ""
    if mode in (AUTO, BWRAP):
        problem = _bwrap_works(executable) if executable else f"{conf.SANDBOX_BWRAP} not found"
        if not problem:
            return Isolation(BWRAP, "bubblewrap namespaces", bwrap=executable)
        if mode == BWRAP:
            return Isolation(NONE, f"bubblewrap does not work here: {problem}")
        bwrap_problem = problem
    if mode in (AUTO, USER):
        problem = _user_problem(conf.SANDBOX_USER)
        if not problem:
            return Isolation(USER, f"separate user {conf.SANDBOX_USER}", user=conf.SANDBOX_USER)
        if mode == USER:
            return Isolation(NONE, f"cannot run nodes as another user: {problem}")
        return Isolation(NONE, f"bubblewrap: {bwrap_problem}; separate user: {problem}")
    return Isolation(NONE, "WORKFLOWS_SANDBOX is 'none'")


@dataclasses.dataclass
class Confinement:
    """The command that runs the node, and what else the subprocess needs."""

    argv: list[str]
    env: dict[str, str]
    popen: dict[str, Any]
    # bwrap reports a node killed by signal N as exit code 128 + N.
    signal_exit_codes: bool = False


def confine(
    argv: list[str],
    env: dict[str, str],
    *,
    workspace: Path,
    scratch: Path,
    script: str | None,
    network: bool,
    packages_root: str,
) -> Confinement:
    """Wrap the node's command line in the mechanism that `isolation()` picks."""
    chosen = isolation()
    if chosen.kind == BWRAP:
        env = {**env, "PYTHONPATH": PACKAGES_MOUNT}
        command = _bwrap_command(
            chosen.bwrap,
            workspace=workspace,
            scratch=scratch,
            script=script,
            network=network,
            packages_root=packages_root,
        )
        return Confinement(command + argv, env, {}, signal_exit_codes=True)
    if chosen.kind == USER:
        entry = pwd.getpwnam(chosen.user)
        _hand_over(entry.pw_uid, entry.pw_gid, (workspace, scratch))
        return Confinement(
            argv,
            env,
            {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []},
        )
    return Confinement(argv, env, {})


def _bwrap_command(
    executable: str,
    *,
    workspace: Path,
    scratch: Path,
    script: str | None,
    network: bool,
    packages_root: str,
) -> list[str]:
    command = [executable, "--unshare-all", "--die-with-parent", "--cap-drop", "ALL"]
    if network:
        command.append("--share-net")
    command += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    etc = _ETC_FILES + (_NETWORK_ETC_FILES if network else ())
    for name in etc:
        command += ["--ro-bind-try", name, name]
    command += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for directory in _interpreter_dirs():
        command += ["--ro-bind", directory, directory]
    for package in PACKAGES:
        source = os.path.join(packages_root, package)
        command += ["--ro-bind", source, f"{PACKAGES_MOUNT}/{package}"]
    if script is not None:
        folder = os.path.dirname(os.path.realpath(script))
        command += ["--ro-bind", folder, folder]
    command += ["--bind", str(scratch), str(scratch)]
    command += ["--bind", str(workspace), str(workspace)]
    command += ["--chdir", str(workspace)]
    return command


def _interpreter_dirs() -> list[str]:
    """The directories the node's interpreter needs: its prefix, the venv's, their real paths."""
    python = conf.PYTHON
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    python_dir = os.path.dirname(os.path.abspath(python))
    candidates.add(os.path.dirname(python_dir))
    real_dir = os.path.dirname(os.path.realpath(python))
    candidates.add(os.path.dirname(real_dir))
    found = sorted(
        {os.path.realpath(c) for c in candidates} | {os.path.abspath(c) for c in candidates}
    )
    # /usr is mounted already; a prefix inside another one is covered by it.
    kept: list[str] = []
    for directory in found:
        if not os.path.isdir(directory) or _inside(directory, ["/usr", *kept]):
            continue
        kept.append(directory)
    return kept


def _inside(path: str, roots: Iterable[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def _hand_over(uid: int, gid: int, directories: Iterable[Path]) -> None:
    """Give the node's user its workspace and scratch; links are changed, never followed."""
    for directory in directories:
        os.chown(directory, uid, gid, follow_symlinks=False)
        for root, dirs, files in os.walk(directory):
            for name in dirs + files:
                os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
