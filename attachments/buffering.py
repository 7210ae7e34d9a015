"""
Bodies under servers that read a whole request before the application sees
it: Daphne, through Twisted, which also parses a multipart body into memory
(about 14 times its size) before Daphne hands it on. Nothing in the
application can stop that once it started, so under Daphne a body longer than
`ATTACHMENTS_BUFFERED_BODY_MAX_BYTES` is refused by the server's own request
object as soon as its length is known (from Content-Length, or as a chunked
body grows), with a JSON 413 and the connection closed, before Twisted keeps
or parses it. `/api/limits` announces the smaller limit; large files go by
tus (8 MiB chunks) or to a server that streams bodies (Uvicorn, Granian).

Daphne also hands every response chunk to Twisted at once, with no
back-pressure, so a slow client of a large download would have the whole
file queued in memory. The application's `send()` of a body chunk now waits
while Twisted's transport is full (Twisted pauses the request's producer), so
a download holds about one buffer, whatever the client's speed.
"""

from __future__ import annotations

import json
from typing import Any

from .conf import conf

_installed = False
# Set by the first request Daphne builds in this process: Daphne's modules are
# loaded under every server (it is an installed app, for runserver).
_serving_daphne = False


def under_buffering_server() -> bool:
    """Whether this process serves its requests through Daphne."""
    return _serving_daphne


def buffered_body_limit() -> int | None:
    """The largest body this process accepts, when its server buffers bodies; else None."""
    return conf.BUFFERED_BODY_MAX_BYTES if under_buffering_server() else None


def _refusal(limit: int) -> bytes:
    body = json.dumps(
        {
            "detail": (
                f"This server reads whole request bodies into memory, so it takes at most "
                f"{limit} bytes per request; send large files with the resumable (tus) "
                "endpoint, in chunks."
            ),
            "code": "upload_too_large",
            "limit_bytes": limit,
        }
    ).encode()
    head = (
        "HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + body


def guard_daphne() -> None:
    """Make Daphne refuse over-long bodies before it reads them (idempotent)."""
    global _installed
    if _installed:
        return
    try:
        from daphne import http_protocol
    except ImportError:
        return
    base = http_protocol.WebRequest

    class BoundedWebRequest(base):  # type: ignore[misc, valid-type]
        _received = 0
        _refused = False

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            global _serving_daphne
            _serving_daphne = True
            super().__init__(*args, **kwargs)

        def gotLength(self, length: int | None) -> None:  # noqa: N802 (Twisted's name)
            limit = conf.BUFFERED_BODY_MAX_BYTES
            if length is not None and length > limit:
                self._refuse(limit)
                return
            super().gotLength(length)

        def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
            if self._refused:
                return
            self._received += len(data)
            limit = conf.BUFFERED_BODY_MAX_BYTES
            if self._received > limit:
                self._refuse(limit)
                return
            super().handleContentChunk(data)

        def wait_for_room(self) -> Any:
            """An awaitable that completes once the transport takes more (a producer gate)."""
            gate = getattr(self, "_gate", None)
            if getattr(self, "_connection_lost", False):
                return _done()
            if gate is None:
                gate = self._gate = _Gate()
                self.registerProducer(gate, True)
            return gate.wait(self._gone)

        def _gone(self) -> bool:
            channel = getattr(self, "channel", None)
            transport = getattr(channel, "transport", None)
            return (
                getattr(self, "_connection_lost", False)
                or transport is None
                or bool(getattr(transport, "disconnecting", False))
                or bool(getattr(transport, "disconnected", False))
            )

        def connectionLost(self, reason: Any) -> None:  # noqa: N802 (Twisted's name)
            # A paused download must not wait for a client that left.
            gate = getattr(self, "_gate", None)
            if gate is not None:
                gate.close()
            self._connection_lost = True
            super().connectionLost(reason)

        def unregister_gate(self) -> None:
            gate, self._gate = getattr(self, "_gate", None), None
            if gate is None:
                return
            gate.resumeProducing()
            # Once the connection is lost Twisted has dropped the channel and
            # its producer with it: there is nothing left to unregister.
            if getattr(self, "channel", None) is not None:
                self.unregisterProducer()

        def _refuse(self, limit: int) -> None:
            self._refused = True
            self.content = _Discard()
            transport: Any = self.channel.transport
            transport.write(_refusal(limit))
            transport.loseConnection()

    http_protocol.WebRequest = BoundedWebRequest
    _pace_replies()
    _installed = True


def _pace_replies() -> None:
    from daphne import server

    handle_reply = server.Server.handle_reply

    async def paced_handle_reply(self: Any, protocol: Any, message: dict[str, Any]) -> None:
        paced = message.get("type") == "http.response.body" and hasattr(protocol, "wait_for_room")
        if paced and not message.get("more_body", False):
            protocol.unregister_gate()  # before the last write finishes the request
        await handle_reply(self, protocol, message)
        if paced and message.get("more_body", False):
            await protocol.wait_for_room()

    server.Server.handle_reply = paced_handle_reply


async def _done() -> None:
    return None


class _Gate:
    """A streaming producer for Twisted: paused while the transport's buffer is full."""

    def __init__(self) -> None:
        import asyncio

        self._open = asyncio.Event()
        self._open.set()
        self._closed = False

    def close(self) -> None:
        """The connection is gone: never pause again."""
        self._closed = True
        self._open.set()

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted's name)
        if not self._closed:
            self._open.clear()

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted's name)
        self._open.set()

    def stopProducing(self) -> None:  # noqa: N802 (Twisted's name)
        self._open.set()  # the client left: let the application find out by itself

    async def wait(self, gone: Any = None) -> None:
        """Until the transport takes more, or (checked every second) the client is gone."""
        import asyncio

        while not self._open.is_set():
            if gone is not None and gone():
                return
            try:
                await asyncio.wait_for(self._open.wait(), 1.0)
            except TimeoutError:
                continue


class _Discard:
    """Where the rest of a refused body goes."""

    closed = False

    def write(self, data: bytes) -> None:
        pass

    def seek(self, *args: Any) -> int:
        return 0

    def read(self, *args: Any) -> bytes:
        return b""

    def close(self) -> None:
        self.closed = True
