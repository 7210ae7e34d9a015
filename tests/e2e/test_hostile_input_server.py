"""
Inputs that used to get a 500 from a real server, each now a 4xx JSON error:
deeply nested JSON bodies, a Range with thousands of digits, a static path
that climbs out of the static roots, a WebSocket to an unknown path, and a
number too large for any float in a run's variables.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from attachments.models import Session
from attachments.parsers import MAX_DEPTH
from tests.servers import DEFAULT_SERVER

pytestmark = [
    pytest.mark.server,
    pytest.mark.django_db(transaction=True),
    pytest.mark.access_policy("token"),
]


@pytest.fixture
def running(server):
    with server(DEFAULT_SERVER) as process:
        yield process


def assert_json_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["code"] == code


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000, 100_000])
def test_deeply_nested_json_is_400_without_credentials(running, depth):
    response = httpx.post(
        f"{running.url}/api/sessions",
        content=f'{{"session_id": {nested(depth)}}}',
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert_json_error(response, 400, "parse_error")


def test_deeply_nested_variables_in_execute_are_400(running):
    before = Session.objects.count()
    response = httpx.post(
        f"{running.url}/api/workflow/execute",
        content=(
            '{"task_prompt": "x", "workflow": "csv_summary", '
            f'"variables": {{"a": {nested(5000)}}}}}'
        ),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert_json_error(response, 400, "parse_error")
    assert Session.objects.count() == before


def test_a_number_beyond_any_float_is_400_and_leaves_no_session(running):
    before = Session.objects.count()
    response = httpx.post(
        f"{running.url}/api/workflow/execute",
        content='{"task_prompt": "x", "workflow": "csv_summary", "variables": {"a": 1e999}}',
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert_json_error(response, 400, "parse_error")
    assert "too large" in response.json()["detail"]
    assert Session.objects.count() == before


def test_a_range_with_thousands_of_digits_is_416(running):
    with httpx.Client(base_url=running.url, timeout=30) as client:
        created = client.post("/api/sessions").json()
        auth = {"Authorization": f"Bearer {created['token']}"}
        uploaded = client.post(
            f"/api/uploads/{created['session_id']}",
            files={"file": ("a.txt", b"hello world")},
            headers=auth,
        ).json()
        url = f"/api/sessions/{created['session_id']}/artifacts/{uploaded['attachment_id']}"
        huge = "9" * 4301

        def fetch(byte_range: str) -> httpx.Response:
            headers = {**auth, "Range": f"bytes={byte_range}"}
            return client.get(url, params={"mode": "stream"}, headers=headers)

        assert_json_error(fetch(f"{huge}-"), 416, "range_not_satisfiable")
        end = fetch(f"0-{huge}")
        assert (end.status_code, end.content) == (206, b"hello world")
        suffix = fetch(f"-{huge}")
        assert (suffix.status_code, suffix.content) == (206, b"hello world")


@pytest.mark.parametrize(
    "path",
    [
        "/static/%2e%2e/%2e%2e/macproject/settings.py",
        "/static/..%2f..%2fmacproject/settings.py",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    ],
)
def test_a_static_path_out_of_the_roots_is_a_json_404(running, path):
    response = httpx.get(f"{running.url}{path}", timeout=30)
    assert response.status_code == 404, response.text[:300]
    assert "SECRET_KEY" not in response.text and "root:" not in response.text


def test_the_static_escape_answer_is_json(running):
    path = "/static/%2e%2e/%2e%2e/macproject/settings.py"
    response = httpx.get(f"{running.url}{path}", timeout=30)
    assert_json_error(response, 404, "not_found")


def test_a_websocket_to_an_unknown_path_is_a_json_404(running):
    async def attempt() -> InvalidStatus:
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(f"{running.ws_url}/ws/no/such/path", open_timeout=10):
                pass
        return refused.value

    refused = asyncio.run(attempt())
    assert refused.response.status_code == 404
    assert b'"code": "not_found"' in refused.response.body
    assert "Traceback" not in running.log()
