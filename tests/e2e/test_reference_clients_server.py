"""
The reference platform's Web UI and third-party clients, against real server
processes: what they send, and what they read, unchanged.

- the reference UI's calls (`fetchWorkflowsWithDesc`, execute, LaunchView's
  `artifact_created` rendering, `getAttachment`), on the `open` policy;
- the reference names on every event transport;
- file names as curl and requests write them (Chromium: test_reference_browser.py);
- 304 without a Content-Length, under Uvicorn and Daphne;
- the feed's CORS and security headers;
- httpx-sse and sseclient-py reading a filtered event stream.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from urllib.parse import quote

import httpx
import pytest
import websockets

from tests.attachments.builders import PNG_1x1
from tests.servers import SERVER_KINDS

from .event_clients import create_session, upload_file

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

CSV = b"city,population\nParis,2148000\nLyon,516000\n"
REFERENCE_NAMES = ("event_id", "file_name", "mime_type", "sha256", "relative_path", "created_at")


@pytest.fixture(params=SERVER_KINDS)
def kind(request) -> str:
    return request.param


def assert_reference_names(event: dict) -> None:
    assert event["event_id"] == event["artifact_id"]
    assert event["file_name"] == event["name"]
    assert event["mime_type"] == event["mime"]
    assert "sha256:" + event["sha256"] == event["hash"]
    assert "code_workspace/" + event["relative_path"] == event["path"]
    assert event["created_at"] == event["timestamp"]


@pytest.mark.access_policy("open")
def test_the_reference_web_ui_runs_a_workflow_and_shows_its_artifacts(server):
    with server("uvicorn") as s:
        base = s.url
        # fetchWorkflowsWithDesc: file names, then each one's description.
        listed = httpx.get(base + "/api/workflows").json()["workflows"]
        assert "csv_summary.yaml" in listed and all(isinstance(w, str) for w in listed)
        described = {
            name: httpx.get(f"{base}/api/workflows/{quote(name, safe='')}/desc").json()
            for name in listed
        }
        assert "CSV" in described["csv_summary.yaml"]["description"]

        # LaunchView: a session from the control socket, an upload, a run.
        async def launch() -> list[dict]:
            async with websockets.connect(s.ws_url + "/ws", open_timeout=10) as socket:
                connection = json.loads(await socket.recv())
                assert connection["type"] == "connection"
                session_id = connection["data"]["session_id"]
                async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                    uploaded = await client.post(
                        f"/api/uploads/{session_id}", files={"file": ("cities.csv", CSV)}
                    )
                    assert uploaded.json()["mime_type"] == "text/csv"
                    started = await client.post(
                        "/api/workflow/execute",
                        json={
                            "task_prompt": "Summarise",
                            "yaml_file": "csv_summary.yaml",
                            "session_id": session_id,
                            "attachments": [uploaded.json()["attachment_id"]],
                        },
                    )
                    assert started.status_code == 202, started.text
                artifacts: list[dict] = []
                deadline = time.monotonic() + 60
                while {"result.json", "chart.png"} - {a["file_name"] for a in artifacts}:
                    message = json.loads(
                        await asyncio.wait_for(socket.recv(), deadline - time.monotonic())
                    )
                    if message["type"] == "artifact_created":
                        artifacts.extend(message["data"]["events"])
                return session_id, artifacts

        session_id, artifacts = asyncio.run(launch())
        by_name = {a["file_name"]: a for a in artifacts}
        chart = by_name["chart.png"]
        # What LaunchView renders: name, type, preview and the node.
        assert chart["mime_type"] == "image/png"
        assert chart["node_id"] == "summarise" and chart["attachment_id"].startswith("att_")
        assert by_name["result.json"]["mime_type"] == "application/json"
        for event in artifacts:
            assert_reference_names(event)
        # getAttachment: the preview's data URI.
        meta = httpx.get(f"{base}/api/sessions/{session_id}/artifacts/{chart['attachment_id']}")
        assert meta.json()["data_uri"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("name", ["csv_summary", "csv_summary.yaml"])
def test_execute_takes_the_workflow_with_or_without_its_suffix(server, name):
    with server("uvicorn") as s:
        session_id = create_session(s.url)
        attachment = upload_file(s.url, session_id, "cities.csv", CSV)
        started = httpx.post(
            s.url + "/api/workflow/execute",
            json={
                "task_prompt": "Summarise",
                "workflow": name,
                "session_id": session_id,
                "attachments": [attachment["attachment_id"]],
            },
        )
        assert started.status_code == 202, started.text
        run = httpx.get(f"{s.url}/api/workflow/runs/{started.json()['run_id']}").json()
        assert run["workflow"] == "csv_summary"


def test_every_transport_carries_the_reference_names(server):
    with server("uvicorn") as s:
        session_id = create_session(s.url)
        upload_file(s.url, session_id, "first.txt", b"first")

        async def socket_events(url: str) -> list[dict]:
            async with websockets.connect(url, open_timeout=10) as socket:
                assert json.loads(await socket.recv())["type"] == "connection"
                message = json.loads(await asyncio.wait_for(socket.recv(), 20))
                assert message["type"] == "artifact_created", message
                return message["data"]["events"]

        async def sse_events() -> list[dict]:
            url = f"/api/sessions/{session_id}/artifact-events/stream"
            async with httpx.AsyncClient(base_url=s.url, timeout=20) as client:
                async with client.stream("GET", url, params={"after": 0}) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            return [json.loads(line.removeprefix("data: "))]
            return []

        async def everything() -> list[list[dict]]:
            return list(
                await asyncio.gather(
                    socket_events(f"{s.ws_url}/ws/sessions/{session_id}/artifacts?after=0"),
                    socket_events(f"{s.ws_url}/ws?session_id={session_id}&after=0"),
                    sse_events(),
                )
            )

        received = asyncio.run(everything())
        page = httpx.get(f"{s.url}/api/sessions/{session_id}/artifact-events?after=0").json()
        received.append(page["events"])
    assert [[e["file_name"] for e in events] for events in received] == [["first.txt"]] * 4
    for events in received:
        assert_reference_names(events[0])
        assert events[0] == received[0][0]


def test_file_names_as_curl_and_requests_send_them(server, tmp_path):
    import requests

    local = tmp_path / "local.txt"
    local.write_bytes(b"hello")
    with server("uvicorn") as s:
        session_id = create_session(s.url)
        url = f"{s.url}/api/uploads/{session_id}"
        # curl escapes a quote as %22 and CR/LF as %0D%0A (its default since 7.81).
        for sent in ('say \\"hi\\".txt', "two\nlines.txt"):
            result = subprocess.run(
                ["curl", "-sS", "-F", f'file=@{local};filename="{sent}"', url],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout).get("name"), result.stdout
        # requests (urllib3) does the same.
        for sent in ('a "quoted" name.csv', "carriage\r\nreturn.csv"):
            assert requests.post(url, files={"file": (sent, b"a,b\n")}).status_code == 201
        names = [a["name"] for a in httpx.get(url).json()["attachments"]]
    assert names == ['say "hi".txt', "twolines.txt", 'a "quoted" name.csv', "carriagereturn.csv"]


def test_a_304_carries_no_content_length(server, kind):
    with server(kind) as s:
        session_id = create_session(s.url)
        attachment = upload_file(s.url, session_id, "dot.png", PNG_1x1)
        url = f"{s.url}/api/sessions/{session_id}/artifacts/{attachment['attachment_id']}"
        whole = httpx.get(url, params={"mode": "stream"})
        assert whole.headers["content-length"] == str(len(PNG_1x1))
        for params in ({"mode": "stream"}, {}):
            target = url + ("/content" if not params else "")
            conditional = {"If-None-Match": whole.headers["etag"]}
            again = httpx.get(target, params=params, headers=conditional)
            assert again.status_code == 304
            assert "content-length" not in again.headers, dict(again.headers)
            assert again.headers["etag"] == whole.headers["etag"]
        zipped = httpx.get(f"{s.url}/api/sessions/{session_id}/download?compress=false")
        again = httpx.get(
            f"{s.url}/api/sessions/{session_id}/download?compress=false",
            headers={"If-None-Match": zipped.headers["etag"]},
        )
        assert again.status_code == 304 and "content-length" not in again.headers


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}
ORIGIN = "https://ui.example"


def test_the_feed_sends_the_cors_and_security_headers_of_the_rest(server, kind):
    with server(kind, MAC_CORS_ALLOWED_ORIGINS=ORIGIN) as s:
        session_id = create_session(s.url)
        base = f"{s.url}/api/sessions/{session_id}"
        origin = {"Origin": ORIGIN}
        responses = {
            "session": httpx.get(base, headers=origin),
            "long-poll": httpx.get(f"{base}/artifact-events?after=0", headers=origin),
            "410": httpx.get(f"{base}/artifact-events/stream?after=9", headers=origin),
        }
        with httpx.stream("GET", f"{base}/artifact-events/stream", headers=origin) as stream:
            responses["stream"] = stream
        elsewhere = {"Origin": "https://x.example"}
        refused = httpx.get(f"{base}/artifact-events?after=0", headers=elsewhere)
    assert responses["stream"].status_code == 200
    for label, response in responses.items():
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (label, name)
        assert response.headers["access-control-allow-origin"] == ORIGIN, label
        assert "origin" in response.headers["vary"].lower(), label
    assert "access-control-allow-origin" not in refused.headers


def test_httpx_sse_and_sseclient_read_a_filtered_stream(server):
    """
    Between matching events, an `id:`-only block moves the resume point past
    filtered-out ones. Browsers and sseclient-py dispatch nothing for it;
    httpx-sse yields it with empty data (as it does a keep-alive comment),
    which its users skip: the README says so.
    """
    import requests
    import sseclient
    from httpx_sse import connect_sse

    with server("uvicorn") as s:
        session_id = create_session(s.url)
        for name in ("a.png", "b.txt", "c.txt", "d.png", "e.txt"):
            upload_file(s.url, session_id, name, PNG_1x1 if name.endswith(".png") else b"text")
        url = f"{s.url}/api/sessions/{session_id}/artifact-events/stream"
        params = {"after": 0, "include_ext": "png"}

        with (
            httpx.Client(timeout=20) as client,
            connect_sse(client, "GET", url, params=params) as source,
        ):
            matched, last_id = [], None
            for sse in source.iter_sse():
                last_id = sse.id
                if sse.data:  # the documented rule
                    matched.append(sse.json()["file_name"])
                elif matched == ["a.png", "d.png"]:
                    break  # the cursor block after d.png: past e.txt
        assert matched == ["a.png", "d.png"]
        assert last_id == "5"  # resuming from it skips e.txt without rescanning

        with requests.get(url, params=params, stream=True, timeout=20) as response:
            events = sseclient.SSEClient(response).events()
            read = [next(events), next(events)]
        assert [json.loads(e.data)["file_name"] for e in read] == ["a.png", "d.png"]
        assert [e.id for e in read] == ["1", "4"]

        # Resuming from the last id, as a reconnecting client does.
        upload_file(s.url, session_id, "f.png", PNG_1x1)
        headers = {"Last-Event-ID": last_id}
        with (
            httpx.Client(timeout=20) as client,
            connect_sse(
                client, "GET", url, params={"include_ext": "png"}, headers=headers
            ) as source,
        ):
            resumed = next(sse for sse in source.iter_sse() if sse.data)
        assert (resumed.json()["file_name"], resumed.id) == ("f.png", "6")
