"""
scripts/serve as a person runs it: without MAC_SECRET_KEY it generates the
installation's key once, owner-only, beside the warehouse, and keeps it
across restarts (a signed link made before a restart still opens after it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import servers
from tests.servers import ROOT, ServerProcess, _wait_until_up, free_port

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]


@contextlib.contextmanager
def serve(warehouse: Path, log: Path) -> Iterator[ServerProcess]:
    port = free_port()
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("MAC_SECRET", "DJANGO_"))
    }
    environment.update(
        PORT=str(port),
        DATABASE_URL=servers.test_database_url(),
        MAC_WAREHOUSE_DIR=str(warehouse),
        PYTHONUNBUFFERED="1",
    )
    with open(log, "ab") as sink:
        process = subprocess.Popen(
            [str(ROOT / "scripts" / "serve")],
            cwd=ROOT,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = ServerProcess("serve", f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_until_up(running, timeout=300)  # the first run may install the project
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def test_serve_generates_the_key_once_and_keeps_it(tmp_path):
    warehouse = tmp_path / "WareHouse"
    key_file = tmp_path / ".mac_secret_key"
    with serve(warehouse, tmp_path / "serve.log") as server:
        created = httpx.post(f"{server.url}/api/sessions", timeout=30).json()
        headers = {"Authorization": f"Bearer {created['token']}"}
        link = httpx.get(
            f"{server.url}/api/sessions/{created['session_id']}/download/link",
            headers=headers,
            timeout=30,
        ).json()["url"]
        assert httpx.get(link, timeout=30).status_code == 200
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text()
    assert len(key.strip()) >= 50
    with serve(warehouse, tmp_path / "serve.log") as server:
        again = server.url + "/api/" + link.split("/api/", 1)[1]
        assert httpx.get(again, timeout=30).status_code == 200
    assert key_file.read_text() == key
