"""
What the benchmark scripts share: a free port to start a server on, and
waiting until the server listens. Imported as `_common` (each script runs
from this directory: `python bench/<script>.py`).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_listening(
    port: int,
    process: subprocess.Popen[bytes] | None = None,
    *,
    log: Path | None = None,
    timeout: float = 60,
    interval: float = 0.1,
) -> None:
    """Return once 127.0.0.1:`port` takes connections; fail if `process` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
                detail = log.read_text() if log is not None else f"nothing listens on {port}"
                raise RuntimeError(detail) from None
            time.sleep(interval)
