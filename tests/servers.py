"""
Real ASGI server processes for end-to-end tests, pointed at the test database
and a test warehouse. Use the `server` fixture's factory inside a test marked
`django_db(transaction=True)`, so what the test writes is visible to the
server and the other way round.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent

# The default server streams request bodies; Daphne buffers them but stays
# supported, so end-to-end tests run under both.
COMMANDS = {
    # Uvicorn as scripts/serve runs it: with macproject.server's connection limits.
    "uvicorn": [
        sys.executable,
        "-m",
        "macproject.server",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
    ],
    "daphne": [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        "{port}",
        "macproject.asgi:application",
    ],
}
DEFAULT_SERVER = "uvicorn"
SERVER_KINDS = list(COMMANDS)
# The servers' own commands as an operator types them (lifespan on), for the
# tests of what must work whatever the command line.
PLAIN_COMMANDS = {
    "uvicorn-plain": [
        sys.executable,
        "-m",
        "uvicorn",
        "macproject.asgi:application",
        "--port",
        "{port}",
    ],
    "granian": [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--port",
        "{port}",
        "macproject.asgi:application",
    ],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_database_url() -> str:
    """A DATABASE_URL for the database the test run is using right now."""
    settings = connection.settings_dict
    # pytest-django only swaps in the test database for runs that collect a
    # django_db test; a server must never be pointed at the real one.
    if "test" not in str(settings["NAME"]):
        raise RuntimeError(f"Not a test database: {settings['NAME']}; mark the test django_db.")
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    if connection.vendor == "postgresql":
        user = settings.get("USER") or ""
        host = settings.get("HOST") or "127.0.0.1"
        port = settings.get("PORT") or 5432
        return f"postgres://{user}@{host}:{port}/{settings['NAME']}"
    raise RuntimeError(f"No server tests for {connection.vendor}")


@dataclass
class ServerProcess:
    kind: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def run_server(
    kind: str, warehouse: Path, log_dir: Path, port: int | None = None, **env: str
) -> Iterator[ServerProcess]:
    """`port`: the one a killed server had, for clients that resume at the same address."""
    port = port or free_port()
    command = [part.format(port=port) for part in {**COMMANDS, **PLAIN_COMMANDS}[kind]]
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "macproject.settings",
        "DATABASE_URL": test_database_url(),
        "MAC_WAREHOUSE_DIR": str(warehouse),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{kind}-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(kind, f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_until_up(server)
        yield server
    finally:
        _stop(process)


def _wait_until_up(server: ServerProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.kind} exited early:\n{server.log()}")
        try:
            httpx.get(server.url + "/api/sessions/readiness-probe", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{server.kind} did not start in {timeout}s:\n{server.log()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
