"""Builders for the workflow tests: workflow files, an in-process ASGI client, a /ws listener."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import httpx
from channels.testing import WebsocketCommunicator

from macproject.asgi import application
from workflows.running import wait_for_run


def write_workflow(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def asgi_client() -> httpx.AsyncClient:
    """Requests through the project's ASGI app on the test's loop, where runs then execute."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://testserver", timeout=30
    )


async def upload(client: httpx.AsyncClient, session_id: str, name: str, data: bytes) -> dict:
    response = await client.post(f"/api/uploads/{session_id}", files={"file": (name, data)})
    assert response.status_code == 201, response.text
    return response.json()


async def execute(client: httpx.AsyncClient, **body: Any) -> dict:
    body.setdefault("task_prompt", "Summarise the data")
    response = await client.post("/api/workflow/execute", json=body)
    assert response.status_code == 202, response.text
    return response.json()


async def finished(client: httpx.AsyncClient, run_id: str, timeout: float = 60) -> dict:
    await asyncio.wait_for(wait_for_run(run_id), timeout)
    response = await client.get(f"/api/workflow/runs/{run_id}")
    assert response.status_code == 200
    return response.json()


async def run_status(client: httpx.AsyncClient, run_id: str) -> dict:
    return (await client.get(f"/api/workflow/runs/{run_id}")).json()


async def until(predicate, timeout: float = 30, interval: float = 0.05):
    """Await `predicate()` (sync or async) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


class Listener:
    """A /ws client of a session that keeps every message it receives."""

    def __init__(self, session_id: str) -> None:
        self.communicator = WebsocketCommunicator(
            application, f"/ws?session_id={session_id}", headers=[(b"host", b"localhost")]
        )
        self.messages: list[dict] = []
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Listener:
        connected, _ = await self.communicator.connect()
        assert connected
        first = await self.communicator.receive_json_from()
        assert first["type"] == "connection"
        self._task = asyncio.ensure_future(self._collect())
        return self

    async def _collect(self) -> None:
        while True:
            self.messages.append(await self.communicator.receive_json_from(timeout=3600))

    async def send(self, message: dict) -> None:
        await self.communicator.send_json_to(message)

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m["type"] == kind]

    async def wait_for(self, kind: str, predicate=lambda m: True, timeout: float = 30) -> dict:
        return await until(
            lambda: next((m for m in self.of_type(kind) if predicate(m)), None), timeout
        )

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.communicator.disconnect()
