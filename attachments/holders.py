"""
Who holds a lease, in terms another process can check: whether that holder
has died.

A lease kept in the database frees itself once it lapses, which is all a
worker on another host can wait for. A worker on the same machine can do
better: the holder is named by the kernel's boot id, its PID namespace, its
PID and the time it started (which tells a PID reused since), and if that
process is gone, or a zombie, its lease is dead now, not in half a minute.
Only a holder this process can see in its own `/proc`, the same boot and
the same PID namespace, is ever judged dead; any other is assumed alive.

The boot id alone (`this_boot()`) names a kernel's page cache: bytes a
process wrote but nobody fsync'd are still there for every process of the
same boot, even once their writer died, and gone after a reboot.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")
_named: tuple[int, str] | None = None
_boot: str | None = None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _state_and_start_time(pid: int) -> tuple[str, str] | None:
    """A process's state and start time (clock ticks after boot), or None if there is none."""
    stat = _read(_PROC / str(pid) / "stat")
    if stat is None:
        return None
    # The command name, in parentheses, may hold spaces and parentheses itself.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[0], fields[19]


def this_boot() -> str:
    """The running kernel's boot id; "" where /proc does not tell it."""
    global _boot
    if _boot is None:
        _boot = _read(_PROC / "sys/kernel/random/boot_id") or ""
    return _boot


def _machine() -> str | None:
    """This process's boot and PID namespace, where /proc tells them."""
    boot = this_boot()
    try:
        namespace = os.readlink(_PROC / "self/ns/pid")
    except OSError:
        return None
    if not boot or not namespace.startswith("pid:["):
        return None
    return f"{boot}/{namespace[5:-1]}"


def this_process() -> str:
    """This process, as a lease holder; "" where it cannot be named (no /proc)."""
    global _named
    pid = os.getpid()
    if _named is None or _named[0] != pid:  # a forked worker is another holder
        machine, started = _machine(), _state_and_start_time(pid)
        name = f"{machine}/{pid}/{started[1]}" if machine and started else ""
        _named = (pid, name)
    return _named[1]


def has_died(holder: str) -> bool:
    """Whether `holder` (from `this_process()`) is certainly gone: only on this machine."""
    try:
        boot, namespace, pid_text, started = holder.split("/")
        pid = int(pid_text)
    except ValueError:
        return False
    if f"{boot}/{namespace}" != _machine():
        return False
    found = _state_and_start_time(pid)
    if found is None:
        return True
    state, start = found
    return start != started or state in {"Z", "X"}
