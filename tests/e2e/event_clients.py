"""Clients of the artifact event feed over real sockets, recording when each event arrives."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx
import websockets


@dataclass
class Received:
    """Events in arrival order, with the monotonic time each arrived."""

    events: list[dict] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def add(self, events: list[dict]) -> None:
        now = time.monotonic()
        self.events.extend(events)
        self.times.extend([now] * len(events))

    @property
    def sequences(self) -> list[int]:
        return [e["sequence"] for e in self.events]


def create_session(base_url: str) -> str:
    return create_session_with_auth(base_url)[0]


def create_session_with_auth(base_url: str) -> tuple[str, dict[str, str]]:
    """A new session's id, and the headers that carry its token."""
    response = httpx.post(base_url + "/api/sessions", json={}, timeout=10)
    assert response.status_code == 201, response.text
    body = response.json()
    return body["session_id"], {"Authorization": f"Bearer {body['token']}"}


def upload_file(base_url: str, session_id: str, name: str, data: bytes) -> dict:
    """Upload a file with a plain multipart request; the attachment's JSON."""
    response = httpx.post(
        f"{base_url}/api/uploads/{session_id}", files={"file": (name, data)}, timeout=60
    )
    assert response.status_code == 201, response.text
    return response.json()


async def upload(
    client: httpx.AsyncClient, session_id: str, name: str, data: bytes
) -> tuple[str, float]:
    """Upload a file; its attachment id and when the response arrived."""
    response = await client.post(f"/api/uploads/{session_id}", files={"file": (name, data)})
    assert response.status_code == 201, response.text
    return response.json()["attachment_id"], time.monotonic()


async def long_poll(
    base_url: str, session_id: str, total: int, into: Received, after: int = 0
) -> None:
    """Poll with after=next_cursor until `total` events have arrived."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        while len(into.events) < total:
            response = await client.get(
                f"/api/sessions/{session_id}/artifact-events",
                params={"after": after, "wait_seconds": 20},
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["next_cursor"] >= after
            into.add(body["events"])
            after = body["next_cursor"]


async def websocket(
    url: str, total: int, into: Received, connected: asyncio.Event | None = None
) -> None:
    """Read artifact_created messages until `total` events have arrived."""
    async with websockets.connect(url, open_timeout=10) as socket:
        first = json.loads(await socket.recv())
        assert first["type"] == "connection", first
        if connected is not None:
            connected.set()
        while len(into.events) < total:
            message = json.loads(await socket.recv())
            assert message["type"] == "artifact_created", message
            into.add(message["data"]["events"])


async def websocket_until(url: str, count: int, into: Received) -> None:
    """Like `websocket`, but leave once `count` more events arrived (mid-burst)."""
    start = len(into.events)
    await websocket(url, start + count, into)


async def sse(
    base_url: str, session_id: str, count: int, into: Received, last_event_id: str | None = None
) -> str | None:
    """Read the event stream until `count` more events arrived; the last id seen."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    params = {} if last_event_id else {"after": 0}
    wanted = len(into.events) + count
    last_id = last_event_id
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        async with client.stream(
            "GET",
            f"/api/sessions/{session_id}/artifact-events/stream",
            params=params,
            headers=headers,
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            block: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line == "":
                    if "id" in block:
                        last_id = block["id"]
                    if "data" in block and "event" not in block:
                        into.add([json.loads(block["data"])])
                        if len(into.events) >= wanted:
                            return last_id
                    block = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    block[name] = value.removeprefix(" ")
    return last_id
