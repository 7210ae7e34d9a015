"""Small builders shared by the artifacts tests."""

from __future__ import annotations

import hashlib
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


DROPPING_LAYER = {"default": {"BACKEND": "tests.artifacts.builders.DroppingChannelLayer"}}
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
