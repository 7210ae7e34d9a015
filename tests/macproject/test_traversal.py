"""
Hostile ids and paths on every endpoint: traversal, encoded separators, NUL
bytes, absolute paths. Each gets a JSON 400 or 404, never a 500, and nothing
outside the warehouse is read or written.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import unquote

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from tests.attachments.builders import attach, multipart, new_session
from tests.scopes import http_scope

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.access_policy("token")]

# As they appear in the URL, percent-encoding included.
HOSTILE = [
    "..",
    ".",
    "%2E%2E",
    "..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "%2F",
    "..%5C..%5Cwindows",
    "%252E%252E%252F",
    "a%00b",
    "%00",
    "att_%00aaaaaaaaaaaaaaaa",
    "att_..%2F..%2F..%2Fetc",
    "~root",
    "%C3%A9t%C3%A9",
    "x" * 300,
]

SESSION_URLS = [
    ("GET", "/api/sessions/{x}"),
    ("DELETE", "/api/sessions/{x}"),
    ("GET", "/api/uploads/{x}"),
    ("POST", "/api/uploads/{x}"),
    ("GET", "/api/sessions/{x}/artifacts/att_aaaaaaaaaaaaaaaa"),
    ("GET", "/api/sessions/{x}/artifacts/att_aaaaaaaaaaaaaaaa/link"),
    ("GET", "/api/sessions/{x}/download"),
    ("GET", "/api/sessions/{x}/download/link"),
    ("GET", "/api/workflow/runs?session_id={x}"),
    ("GET", "/api/workflow/runs/{x}"),
    ("POST", "/api/workflow/runs/{x}/cancel"),
    ("POST", "/api/workflow/runs/{x}/input"),
]

ARTIFACT_URLS = [
    ("GET", "/api/sessions/{sid}/artifacts/{x}"),
    ("GET", "/api/sessions/{sid}/artifacts/{x}?mode=stream"),
    ("GET", "/api/sessions/{sid}/artifacts/{x}/link"),
]


@pytest.fixture
def session(warehouse, tmp_path):
    session = new_session()
    attach(session, "inside.txt", b"inside")
    (tmp_path / "secret.txt").write_text("outside the warehouse")
    return session


def assert_json_refusal(status: int, body: bytes) -> dict:
    assert status in (400, 404), (status, body[:300])
    payload = json.loads(body)
    assert payload["code"] and payload["detail"]
    assert b"Traceback" not in body and b"outside the warehouse" not in body
    return payload


def django_request(method: str, url: str, token: str):
    body, content_type = multipart([("file", "a.txt", b"a")])
    extra = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    if method == "POST" and "/uploads/" in url:
        return Client().generic(method, url, body, content_type=content_type, **extra)
    if method == "POST":
        return Client().generic(method, url, "{}", content_type="application/json", **extra)
    return Client().generic(method, url, **extra)


def asgi_request(method: str, url: str, token: str) -> tuple[int, bytes]:
    """The request as an ASGI server passes it on: `path` percent-decoded, `raw_path` as sent."""
    from macproject.asgi import application

    body, content_type = multipart([("file", "a.txt", b"a")])
    raw_path, _, query = url.partition("?")
    headers = [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode())]
    if method == "POST":
        headers += [
            (b"content-type", content_type.encode()),
            (b"content-length", b"%d" % len(body)),
        ]
    scope = http_scope(unquote(raw_path), method, query=query, headers=headers, raw_path=raw_path)
    messages = [{"type": "http.request", "body": body if method == "POST" else b""}]
    sent: list[dict] = []

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(application(scope, receive, send), 10))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(("method", "url"), SESSION_URLS, ids=[f"{m} {u}" for m, u in SESSION_URLS])
def test_hostile_session_and_run_ids(session, method, url, value):
    target = url.format(x=value)
    response = django_request(method, target, session.token)
    assert_json_refusal(response.status_code, response.content)
    assert_json_refusal(*asgi_request(method, target, session.token))


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(
    ("method", "url"), ARTIFACT_URLS, ids=[f"{m} {u}" for m, u in ARTIFACT_URLS]
)
def test_hostile_artifact_ids_in_a_session_one_may_reach(session, method, url, value):
    target = url.format(sid=session.session_id, x=value)
    response = django_request(method, target, session.token)
    assert_json_refusal(response.status_code, response.content)
    assert_json_refusal(*asgi_request(method, target, session.token))


@pytest.mark.parametrize("value", ["/etc/passwd", "../../etc/passwd", "a\x00b", "..", ""])
def test_hostile_ids_in_the_execute_body(session, value):
    response = Client().post(
        "/api/workflow/execute",
        {"task_prompt": "x", "workflow": "csv_summary", "session_id": value},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {session.token}",
    )
    assert_json_refusal(response.status_code, response.content)
    for attachments in ([value], ["att_../../etc/passwd"]):
        response = Client().post(
            "/api/workflow/execute",
            {
                "task_prompt": "x",
                "workflow": value or "csv_summary",
                "session_id": session.session_id,
                "attachments": attachments,
            },
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {session.token}",
        )
        assert_json_refusal(response.status_code, response.content)


@pytest.mark.parametrize(
    "query",
    ["include_ext=../..", "include_mime=%00", "max_size=-1", "after=..", "compress=%2F"],
)
def test_hostile_zip_filters(session, query):
    response = Client().get(
        f"/api/sessions/{session.session_id}/download?{query}",
        HTTP_AUTHORIZATION=f"Bearer {session.token}",
    )
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        names = b"".join(response.streaming_content)
        assert b"secret.txt" not in names


@pytest.mark.parametrize("value", ["..", "..%2F..", "%2Fetc%2Fpasswd", "a%00b", "x" * 100])
async def test_hostile_session_ids_on_the_control_socket(value):
    from macproject.asgi import application

    communicator = WebsocketCommunicator(
        application, f"/ws?session_id={value}", headers=[(b"host", b"localhost")]
    )
    connected, _ = await communicator.connect()
    assert connected
    first = await communicator.receive_json_from()
    assert first["type"] == "error"
    assert first["data"]["code"] in ("invalid_session_id", "session_not_found")
    assert (await communicator.receive_output())["type"] == "websocket.close"
    await communicator.disconnect()
    assert await sync_to_async(lambda: True)()
