"""
The server process's CPUs (MAC_SERVER_CPU).

One Python process serving uploads is bound by its GIL: on two CPUs it did
no more uploads per second than pinned to one (about 220/s either way, for
6 ms of CPU per upload unpinned against 4.4 ms pinned), since its threads
handing the GIL to each other across CPUs cost as much as the C work
running beside them gained. Pinned to one CPU, with MIME detection
(libmagic, the largest part of a small upload's CPU) in processes on the
other CPUs (`attachments.mime.DetectionProcesses`), 16 clients into 16
sessions went from 232-242/s to 325-369/s (bench/upload_concurrency.py).

A process pins its own threads, so this is for a server that is one
process, as on the embedded defaults (their channel layer lives in the
process): `auto` is the default there, `off` with Redis, where several
worker processes would each need a CPU of their own (set MAC_SERVER_CPU
per worker). The default server (`macproject.server`, which scripts/serve
runs) pins itself; a server started otherwise (`uvicorn
macproject.asgi:application`, Daphne) does not. Python nodes of workflows
leave the server's CPU for every CPU (`workflows.node.use_every_cpu`).
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

from attachments import mime

# Detection processes at most, whatever the number of CPUs left.
MAX_DETECTION_PROCESSES = 8


def server_cpu(setting: str, allowed: set[int]) -> int | None:
    """
    The CPU the server keeps its threads on, from MAC_SERVER_CPU ("" or
    "off": none, "auto": the first allowed one, or a CPU number), or None
    when there is nothing to pin: off, or a single CPU allowed.
    """
    setting = setting.strip().lower()
    if setting in ("", "off") or len(allowed) < 2:
        return None
    if setting == "auto":
        return min(allowed)
    try:
        cpu = int(setting)
    except ValueError:
        raise ImproperlyConfigured(
            f'MAC_SERVER_CPU must be "auto", "off" or a CPU number, not {setting!r}'
        ) from None
    if cpu not in allowed:
        raise ImproperlyConfigured(
            f"MAC_SERVER_CPU={cpu} is not among the CPUs this process may use: {sorted(allowed)}"
        )
    return cpu


def pin_server(setting: str) -> int | None:
    """
    Keep this process's threads on one CPU and detect MIME types in
    processes on the others. Call it before the server starts its threads:
    a thread inherits the CPUs of the thread that starts it. The CPU, or
    None if nothing was pinned.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None  # not Linux: nothing to pin with
    allowed = os.sched_getaffinity(0)
    cpu = server_cpu(setting, allowed)
    if cpu is None:
        return None
    others = frozenset(allowed - {cpu})
    # Started first, so that they do not inherit the one CPU.
    mime.detect_in_processes(min(MAX_DETECTION_PROCESSES, max(2, len(others))), others)
    os.sched_setaffinity(0, {cpu})
    return cpu
