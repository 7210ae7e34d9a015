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

        def _refuse(self, limit: int) -> None:
            self._refused = True
            self.content = _Discard()
            transport: Any = self.channel.transport
            transport.write(_refusal(limit))
            transport.loseConnection()

    http_protocol.WebRequest = BoundedWebRequest
    _installed = True


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
