"""Small builders shared by the artifacts tests."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

import httpx
from asgiref.testing import ApplicationCommunicator
from channels.layers import InMemoryChannelLayer
from channels.testing import WebsocketCommunicator

from attachments.identifiers import new_attachment_id
from attachments.mime import kind_for_mime
from attachments.models import Attachment, Session
from attachments.sessions import create_session


def new_session(session_id: str | None = None) -> Session:
    return create_session(session_id)


def add_attachment(
    session: Session,
    name: str = "a.txt",
    mime: str = "text/plain",
    size: int = 3,
    content: bytes | None = None,
    **fields: Any,
) -> Attachment:
    """An attachment row, as the manifest mirror writes it (no file on disk)."""
    attachment_id = new_attachment_id()
    digest = hashlib.sha256(content if content is not None else name.encode()).hexdigest()
    return Attachment.objects.create(
        session=session,
        attachment_id=attachment_id,
        name=name,
        path=f"code_workspace/attachments/{attachment_id}/{name}",
        mime=mime,
        kind=kind_for_mime(mime),
        size=size,
        sha256=digest,
        **fields,
    )


def sequences(events: list[dict[str, Any]]) -> list[int]:
    return [event["sequence"] for event in events]


def asgi_client() -> httpx.AsyncClient:
    """An HTTP client for the project's ASGI application, in this event loop."""
    from macproject.asgi import application

    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://localhost", timeout=30
    )


class DroppingChannelLayer(InMemoryChannelLayer):
    """Loses every group message, as a full or expired channels-redis layer can."""

    dropped = 0

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        type(self).dropped += 1


class HeldChannelLayer(InMemoryChannelLayer):
    """
    Keeps every group message waiting until the test releases them, as a
    slow layer (a Redis far away, or busy) would; `held` lists them in the
    order they were sent.
    """

    held: list[dict[str, Any]] = []
    _gate: asyncio.Event | None = None

    @classmethod
    def reset(cls) -> None:
        cls.held = []
        cls._gate = asyncio.Event()

    @classmethod
    def release(cls) -> None:
        assert cls._gate is not None
        cls._gate.set()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        type(self).held.append(message)
        assert self._gate is not None
        await self._gate.wait()
        await super().group_send(group, message)


class FailingChannelLayer(InMemoryChannelLayer):
    """Refuses every group message, as a layer whose Redis is down does."""

    attempts = 0

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        type(self).attempts += 1
        raise ConnectionError("the channel layer is down")


DROPPING_LAYER = {"default": {"BACKEND": "tests.artifacts.builders.DroppingChannelLayer"}}
HELD_LAYER = {"default": {"BACKEND": "tests.artifacts.builders.HeldChannelLayer"}}
FAILING_LAYER = {"default": {"BACKEND": "tests.artifacts.builders.FailingChannelLayer"}}
IN_MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


class Communicator(WebsocketCommunicator):
    """
    Channels' WebSocket communicator, minus its patch that stops
    `channels.db` from closing connections while it waits: that patch
    protects `TestCase` transactions, and these tests are transactional, so
    without it the feed's pool threads close their connections as in
    production.
    """

    async def send_input(self, message: dict[str, Any]) -> None:
        await ApplicationCommunicator.send_input(self, message)

    async def receive_output(self, timeout: float = 1) -> dict[str, Any]:
        return await ApplicationCommunicator.receive_output(self, timeout)


async def ws_connect(path: str) -> tuple[Communicator, dict[str, Any]]:
    """A connected socket to the project's application, and its first message."""
    from macproject.asgi import application

    communicator = Communicator(application, path, headers=[(b"host", b"localhost")])
    connected, _ = await communicator.connect()
    assert connected
    return communicator, await communicator.receive_json_from()


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    """
    Wait for the state a test expects (`condition()`), re-checking on the
    event loop, and fail if it does not come within `timeout` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"not reached within {timeout} s: {condition}"
        await asyncio.sleep(0.002)


def waiting(session_id: str, count: int = 1) -> bool:
    """
    Whether `count` readers of the session wait for news in this process
    with no read in flight: from then on only a wake-up (a notification or
    a re-check) lets them see a new event.
    """
    from artifacts.wakeups import hub

    watch = hub().watches.get(session_id)
    return (
        watch is not None and watch.users >= count and watch.waiting >= count and not watch.reading
    )
