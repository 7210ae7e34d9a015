"""
Workflow runs through real server processes, under the default `token`
access policy: upload a CSV, execute the shipped csv_summary while a
/ws/sessions/{id}/artifacts subscriber and an artifact-events long-poller
follow the session, find its outputs registered and announced in the same
order on both, stream them back by `art_` and `att_` id, and download the
session zip; with auto-clean, see attachments/ go and its deletions announced.
And a run that a crashed server left waiting is failed by the next one.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import time
import zipfile

import httpx
import pytest
from websockets.asyncio.client import connect

from attachments.models import Attachment
from attachments.paths import attachments_dir
from tests.servers import SERVER_KINDS
from workflows.models import WorkflowRun
from workflows.runs import RESTART_REASON

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


def new_session(base_url: str) -> tuple[str, dict[str, str]]:
    """A session, and the headers that carry its token."""
    response = httpx.post(base_url + "/api/sessions", json={})
    assert response.status_code == 201, response.text
    body = response.json()
    return body["session_id"], {"Authorization": f"Bearer {body['token']}"}


class Feeds:
    """
    A /ws/sessions/{id}/artifacts subscriber and an artifact-events
    long-poller (always after=next_cursor), both following one session.
    """

    def __init__(self, server, session_id: str, token: str) -> None:
        self.server, self.session_id, self.token = server, session_id, token
        self.socket: list[dict] = []
        self.polled: list[dict] = []
        self.tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        """Return once both are connected: events from here on reach both."""
        subscribed = asyncio.Event()
        self.tasks = [
            asyncio.create_task(self._subscribe(subscribed)),
            asyncio.create_task(self._long_poll()),
        ]
        await asyncio.wait_for(subscribed.wait(), 10)

    async def _subscribe(self, subscribed: asyncio.Event) -> None:
        url = f"{self.server.ws_url}/ws/sessions/{self.session_id}/artifacts?token={self.token}"
        async with connect(url, open_timeout=10) as ws:
            first = json.loads(await ws.recv())
            assert first["type"] == "connection", first
            subscribed.set()
            async for raw in ws:
                message = json.loads(raw)
                assert message["type"] == "artifact_created", message
                assert message["data"]["session_id"] == self.session_id
                self.socket.extend(message["data"]["events"])

    async def _long_poll(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        after = 0
        async with httpx.AsyncClient(base_url=self.server.url, headers=headers, timeout=30) as c:
            while True:
                response = await c.get(
                    f"/api/sessions/{self.session_id}/artifact-events",
                    params={"after": after, "wait_seconds": 10},
                )
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["next_cursor"] >= after, (after, body)
                self.polled.extend(body["events"])
                after = body["next_cursor"]

    async def until(self, done, timeout: float = 30) -> None:
        """Wait (bounded) until `done(events)` holds for both feeds."""
        deadline = time.monotonic() + timeout
        while not (done(self.socket) and done(self.polled)):
            for task in self.tasks:
                if task.done():
                    task.result()  # a feed that failed says why
                    raise AssertionError("a feed stopped early")
            if time.monotonic() > deadline:
                raise AssertionError(f"feeds incomplete:\n{self.socket}\n{self.polled}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass


def reaches(cursor: int):
    return lambda events: bool(events) and events[-1]["sequence"] >= cursor


async def follow_run(
    server, session_id: str, token: str, attachment_id: str
) -> tuple[dict, list[dict]]:
    """Execute csv_summary while a /ws client listens; the run's end and every message seen."""
    messages: list[dict] = []
    url = f"{server.ws_url}/ws?session_id={session_id}&token={token}"
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(url) as ws:
        assert json.loads(await ws.recv())["type"] == "connection"
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client:
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


async def upload_and_run(server, session_id: str, token: str, after_run) -> dict:
    """
    With both feeds connected: upload the CSV, run csv_summary to its end,
    wait until both feeds have `after_run`; what the test checks next.
    """
    headers = {"Authorization": f"Bearer {token}"}
    feeds = Feeds(server, session_id, token)
    await feeds.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client:
            response = await client.post(
                f"/api/uploads/{session_id}", files={"file": ("cities.csv", CSV)}
            )
            assert response.status_code == 201, response.text
            csv = response.json()
            run, messages = await follow_run(server, session_id, token, csv["attachment_id"])
            assert run["status"] == "completed", (run, server.log())
            session = (await client.get(f"/api/sessions/{session_id}")).json()
            await feeds.until(after_run(session, csv))
            await asyncio.sleep(0.3)  # room for anything that should not be there
    finally:
        await feeds.stop()
    return {
        "csv": csv, "run": run, "messages": messages, "session": session,
        "socket": feeds.socket, "polled": feeds.polled,
    }  # fmt: skip


def assert_same_feed(socket: list[dict], polled: list[dict]) -> list[dict]:
    sequences = [e["sequence"] for e in polled]
    assert sequences == sorted(set(sequences)), sequences  # strictly increasing: no duplicates
    assert socket == polled
    return polled


@pytest.mark.access_policy("token")
@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_csv_summary_end_to_end(server, kind, warehouse):
    with server(kind) as s:
        session_id, auth = new_session(s.url)
        token = auth["Authorization"].removeprefix("Bearer ")
        seen = asyncio.run(
            upload_and_run(
                s, session_id, token, lambda session, csv: reaches(session["last_event_cursor"])
            )
        )
        csv = seen["csv"]
        with httpx.Client(base_url=s.url, headers=auth, timeout=30) as client:
            listed = client.get(f"/api/uploads/{session_id}").json()["attachments"]
            session = client.get(f"/api/sessions/{session_id}").json()
            events = assert_same_feed(seen["socket"], seen["polled"])
            by_path = {e["path"]: e for e in events}
            # Both ids of each output, and the upload's id, stream what is on disk.
            streamed = {}
            for event in events:
                for artifact_id in (event["artifact_id"], event["attachment_id"]):
                    response = client.get(
                        f"/api/sessions/{session_id}/artifacts/{artifact_id}",
                        params={"mode": "stream"},
                    )
                    assert response.status_code == 200, (artifact_id, response.text)
                    streamed[artifact_id] = response.content
            download = client.get(f"/api/sessions/{session_id}/download")
            assert download.status_code == 200, download.text
            # Without the token, nothing of it.
            assert httpx.get(f"{s.url}/api/sessions/{session_id}/download").status_code == 404

    assert csv["mime"] == "text/csv"
    assert seen["run"]["status"] == "completed", (seen["run"], s.log())
    assert seen["session"]["status"] == session["status"] == "completed"
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

    manifest_path = attachments_dir(session_dir) / "attachments_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    in_manifest = {a["attachment_id"]: (a["path"], a["sha256"]) for a in manifest["attachments"]}
    rows = {
        a.attachment_id: (a.path, a.sha256)
        for a in Attachment.objects.filter(session__session_id=session_id)
    }
    assert in_manifest == rows == {a["attachment_id"]: (a["path"], a["sha256"]) for a in listed}

    logs = [
        line for m in seen["messages"] if m["type"] == "node_log" for line in m["data"]["lines"]
    ]
    assert "cities.csv: 3 rows, 3 columns" in logs
    statuses = [m["data"]["status"] for m in seen["messages"] if m["type"] == "run_status"]
    assert statuses[0] == "running" and statuses[-1] == "completed"

    # The events: one `created` per attachment, the upload's first, and
    # nothing else, up to the session's last cursor.
    events = seen["polled"]
    assert events[-1]["sequence"] == session["last_event_cursor"]
    assert sorted(e["path"] for e in events) == sorted(a["path"] for a in listed)
    assert [e["change_type"] for e in events] == ["created"] * 3
    assert events[0]["attachment_id"] == csv["attachment_id"]
    result_event = by_path["code_workspace/result.json"]
    chart_event = by_path[by_name["chart.png"]["path"]]
    assert (result_event["node_id"], chart_event["node_id"]) == ("summarise", "summarise")
    assert chart_event["mime"] == "image/png"
    for event in events:
        assert event["artifact_id"].startswith("art_")
        assert event["attachment_id"] == by_name[event["name"]]["attachment_id"]
        on_disk = (session_dir / event["path"]).read_bytes()
        assert event["hash"] == "sha256:" + hashlib.sha256(on_disk).hexdigest()
        assert event["size"] == len(on_disk)
        for artifact_id in (event["artifact_id"], event["attachment_id"]):
            assert streamed[artifact_id] == on_disk, artifact_id

    # The zip: the CSV, result.json, the chart and the manifest, as on disk.
    assert download.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        assert archive.testzip() is None
        names = set(archive.namelist())
        wanted = {a["path"] for a in listed} | {manifest_path.relative_to(session_dir).as_posix()}
        assert wanted <= names, names
        for name in names:
            assert archive.read(name) == (session_dir / name).read_bytes(), name


@pytest.mark.access_policy("token")
@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_auto_clean_drops_attachments_and_announces_their_deletion(server, kind, warehouse):
    def purged(session: dict, csv: dict):
        def done(events: list[dict]) -> bool:
            deleted = {e["attachment_id"] for e in events if e["change_type"] == "deleted"}
            return csv["attachment_id"] in deleted and len(deleted) >= 3

        return done

    with server(kind, MAC_AUTO_CLEAN_ATTACHMENTS="1") as s:
        session_id, auth = new_session(s.url)
        token = auth["Authorization"].removeprefix("Bearer ")
        seen = asyncio.run(upload_and_run(s, session_id, token, purged))
        with httpx.Client(base_url=s.url, headers=auth, timeout=30) as client:
            listed = client.get(f"/api/uploads/{session_id}").json()["attachments"]
            session = client.get(f"/api/sessions/{session_id}").json()

    assert seen["run"]["status"] == "completed", (seen["run"], s.log())
    session_dir = warehouse / f"session_{session_id}"
    assert not attachments_dir(session_dir).exists()
    assert (session_dir / "code_workspace/result.json").is_file()  # workspace files stay
    assert listed == []

    events = assert_same_feed(seen["socket"], seen["polled"])
    assert events[-1]["sequence"] == session["last_event_cursor"]
    created = {e["attachment_id"]: e for e in events if e["change_type"] == "created"}
    deleted = {e["attachment_id"]: e for e in events if e["change_type"] == "deleted"}
    assert [e["change_type"] for e in events] == ["created"] * 3 + ["deleted"] * 3
    assert set(created) == set(deleted)
    assert {e["name"] for e in created.values()} == {"cities.csv", "result.json", "chart.png"}
    for attachment_id, event in deleted.items():
        assert event["path"] == created[attachment_id]["path"]
        assert event["artifact_id"] != created[attachment_id]["artifact_id"]


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
