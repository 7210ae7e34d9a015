"""
Workflow runs through real server processes: upload a CSV, execute the
shipped csv_summary, follow it on /ws, and find its outputs registered; and
a run that a crashed server left waiting is failed by the next one.

To extend after the events feed and the session zip land: subscribe to
/ws/sessions/{id}/artifacts and long-poll /api/sessions/{id}/artifact-events
here, stream the artifact back, and download the session zip.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time

import httpx
import pytest
from websockets.asyncio.client import connect

from attachments.models import Attachment
from tests.servers import SERVER_KINDS
from workflows.models import WorkflowRun
from workflows.records import RESTART_REASON

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

CSV = b"city,population,area\nParis,2148000,105.4\nLyon,516000,47.9\nNice,342000,71.9\n"
FINAL = {"completed", "failed", "cancelled"}


def wait_for_run(base_url: str, run_id: str, statuses: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = httpx.get(f"{base_url}/api/workflow/runs/{run_id}").json()
        if run["status"] in statuses:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never reached {statuses}: {run}")


async def follow_run(server, session_id: str, attachment_id: str) -> tuple[dict, list[dict]]:
    """Execute csv_summary while a /ws client listens; the run's end and every message seen."""
    messages: list[dict] = []
    async with connect(f"{server.ws_url}/ws?session_id={session_id}") as ws:
        assert json.loads(await ws.recv())["type"] == "connection"
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            response = await client.post(
                "/api/workflow/execute",
                json={
                    "task_prompt": "Summarise the cities",
                    "workflow": "csv_summary",
                    "session_id": session_id,
                    "attachments": [attachment_id],
                },
            )
            assert response.status_code == 202, response.text
            assert response.json()["status"] == "started"
            run_id = response.json()["run_id"]

            async def until_final() -> None:
                while True:
                    message = json.loads(await ws.recv())
                    messages.append(message)
                    if message["type"] == "run_status" and message["data"]["status"] in FINAL:
                        return

            try:
                await asyncio.wait_for(until_final(), 60)
            finally:
                run = (await client.get(f"/api/workflow/runs/{run_id}")).json()
                assert run["status"] in FINAL, (run, messages)
    return run, messages


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_csv_summary_end_to_end(server, kind, warehouse):
    with server(kind) as s:
        session_id = httpx.post(s.url + "/api/sessions", json={}).json()["session_id"]
        csv = httpx.post(
            f"{s.url}/api/uploads/{session_id}", files={"file": ("cities.csv", CSV)}
        ).json()
        assert csv["mime"] == "text/csv"
        run, messages = asyncio.run(follow_run(s, session_id, csv["attachment_id"]))
        listed = httpx.get(f"{s.url}/api/uploads/{session_id}").json()["attachments"]
        session = httpx.get(f"{s.url}/api/sessions/{session_id}").json()

    assert run["status"] == "completed", (run, s.log())
    assert session["status"] == "completed"
    by_name = {a["name"]: a for a in listed}
    assert set(by_name) == {"cities.csv", "result.json", "chart.png"}
    assert by_name["result.json"]["source"] == "workspace"
    assert by_name["chart.png"]["source"] == "registered"

    session_dir = warehouse / f"session_{session_id}"
    result = json.loads((session_dir / "code_workspace/result.json").read_text())
    assert (result["rows"], result["columns"]) == (3, 3)
    for attachment in listed:
        data = (session_dir / attachment["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == attachment["sha256"]
    assert (session_dir / by_name["chart.png"]["path"]).read_bytes().startswith(b"\x89PNG")

    manifest = json.loads(
        (session_dir / "code_workspace/attachments/attachments_manifest.json").read_text()
    )
    in_manifest = {a["attachment_id"]: (a["path"], a["sha256"]) for a in manifest["attachments"]}
    rows = {
        a.attachment_id: (a.path, a.sha256)
        for a in Attachment.objects.filter(session__session_id=session_id)
    }
    assert in_manifest == rows == {a["attachment_id"]: (a["path"], a["sha256"]) for a in listed}

    logs = [line for m in messages if m["type"] == "node_log" for line in m["data"]["lines"]]
    assert "cities.csv: 3 rows, 3 columns" in logs
    statuses = [m["data"]["status"] for m in messages if m["type"] == "run_status"]
    assert statuses[0] == "running" and statuses[-1] == "completed"


def test_a_run_left_in_flight_by_a_crashed_server_is_failed_by_the_next(server):
    with server() as s:
        started = httpx.post(
            s.url + "/api/workflow/execute", json={"task_prompt": "Ask", "workflow": "review_csv"}
        ).json()
        wait_for_run(s.url, started["run_id"], {"waiting_for_input"})
        os.killpg(s.process.pid, signal.SIGKILL)
        s.process.wait(10)
    assert WorkflowRun.objects.get(run_id=started["run_id"]).status == "waiting_for_input"

    with server() as s:
        run = httpx.get(f"{s.url}/api/workflow/runs/{started['run_id']}").json()
        session = httpx.get(f"{s.url}/api/sessions/{started['session_id']}").json()
    assert (run["status"], run["error"]) == ("failed", RESTART_REASON)
    assert session["status"] == "failed"
