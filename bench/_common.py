"""
What the benchmark scripts share: a free port to start a server on,
waiting until the server listens, and reading an answer from a raw socket.
Imported as `_common` (each script runs from this directory:
`python bench/<script>.py`).
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


def read_response(
    sock: socket.socket, buffer: bytearray, method: str = "POST"
) -> tuple[int, dict[str, str], bytes]:
    """
    The next answer on a kept-alive connection: its status, its headers
    (lower-cased names) and its body. `buffer` holds what was read past the
    previous answer, and keeps what is read past this one.
    """
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        _read_more(sock, buffer)
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    del buffer[: end + 4]
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if method == "HEAD" or status in (204, 304):
        length = 0
    while len(buffer) < length:
        _read_more(sock, buffer)
    body = bytes(buffer[:length])
    del buffer[:length]
    return status, headers, body


def _read_more(sock: socket.socket, buffer: bytearray) -> None:
    chunk = sock.recv(1 << 16)
    if not chunk:
        raise ConnectionError("the server closed the connection")
    buffer += chunk
