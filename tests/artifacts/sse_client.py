"""A minimal Server-Sent Events reader over an ASGI ApplicationCommunicator."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# asgiref's communicator, which Channels' subclasses: those stop
# channels.db from closing connections while they wait (for TestCase's
# transaction), which leaks the connections of the feed's thread pool.
from asgiref.testing import ApplicationCommunicator

from tests.scopes import http_scope


@dataclass
class Message:
    id: str | None = None
    event: str | None = None
    data: str | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def json(self):
        return json.loads(self.data) if self.data is not None else None


def parse_blocks(text: str) -> list[Message]:
    messages = []
    for block in text.split("\n\n"):
        if not block:
            continue
        message = Message()
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "":
                message.comments.append(value)
            elif name == "data":
                message.data = value if message.data is None else message.data + "\n" + value
            elif name in ("id", "event"):
                setattr(message, name, value)
        messages.append(message)
    return messages


class SSEClient:
    def __init__(self, url: str, **headers: str) -> None:
        from macproject.asgi import application

        parts = urlsplit(url)
        scope = http_scope(
            parts.path,
            query=parts.query,
            headers=[(b"host", b"localhost")]
            + [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
        )
        self.communicator = ApplicationCommunicator(application, scope)
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.buffer = ""
        self.ended = False

    async def start(self) -> int:
        await self.communicator.send_input(
            {"type": "http.request", "body": b"", "more_body": False}
        )
        start = await self.communicator.receive_output(10)
        assert start["type"] == "http.response.start"
        self.status = start["status"]
        self.headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return self.status

    async def body(self, timeout: float = 10) -> bytes:
        """The whole body of a response that is not a stream."""
        chunks = []
        while True:
            message = await self.communicator.receive_output(timeout)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(chunks)

    async def messages(self, until, timeout: float = 10) -> list[Message]:
        """Read until `until(messages)` is true; every complete block so far."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            parsed = parse_blocks(self.buffer[: self.buffer.rfind("\n\n") + 2])
            if until(parsed) or self.ended:
                return parsed
            remaining = deadline - asyncio.get_running_loop().time()
            message = await self.communicator.receive_output(max(remaining, 0.01))
            self.buffer += message.get("body", b"").decode()
            self.ended = not message.get("more_body", False)

    async def close(self) -> None:
        await self.communicator.send_input({"type": "http.disconnect"})
        await self.communicator.wait(5)


def events_of(messages: list[Message]) -> list[dict]:
    return [m.json for m in messages if m.data is not None and m.event is None]
