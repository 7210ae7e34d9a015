"""
A file's body sent around Django. When `FileBodyMiddleware` wraps the
Django application, a file view returns the headers only and leaves the
open file to the middleware (`FileBodySlot`), which has the server send it
itself where the server offers the ASGI `http.response.pathsend` extension
(Granian: the kernel copies the file), and otherwise streams it in large
reads, each read overlapping the sending of the one before (Django's own
ASGI handler would cut every chunk into 64 KiB messages).
"""

from __future__ import annotations

import asyncio
import io
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse

# Reads of a file body sent by `FileBodyMiddleware`: fewer, larger messages
# cost the server less per byte; two are in memory at a time per response.
FILE_READ_BYTES = 4 << 20
# Where `FileBodyMiddleware` offers its slot to the view, in the ASGI scope.
FILE_BODY_SCOPE_KEY = "mac.file_body"
# The response header by which a view hands its file to the middleware; the
# middleware removes it, so it never leaves the process.
FILE_BODY_HEADER = "X-Mac-File-Body"


Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class _FileBody:
    file: io.FileIO
    start: int
    length: int


class FileBodySlot:
    """
    Where a view leaves the open file of its response for `FileBodyMiddleware`
    (one per request). The token in the response header must match, so a
    response that some middleware replaced on the way out (an error page, a
    304) is sent as it is.
    """

    def __init__(self, pathsend: bool) -> None:
        self.pathsend = pathsend
        self._token = ""
        self._body: _FileBody | None = None

    def offer(self, file: io.FileIO, start: int, length: int) -> str:
        """Leave `length` bytes of `file` from `start` to be sent; the header value to set."""
        self._token = secrets.token_hex(8)
        self._body = _FileBody(file, start, length)
        return self._token

    def take(self, token: str) -> _FileBody | None:
        body, self._body = self._body, None
        return body if body is not None and secrets.compare_digest(token, self._token) else None


class FileBodyResponse(HttpResponse):
    """The headers of a file response whose body `FileBodyMiddleware` sends."""

    def __init__(self, status: int, on_close: Callable[[], None]) -> None:
        super().__init__(status=status)
        self._on_close = on_close

    def close(self) -> None:
        # Django closes the response once the last body message is sent, that
        # is once the middleware has sent the whole file.
        try:
            self._on_close()
        finally:
            super().close()


def file_body_slot(request: HttpRequest) -> FileBodySlot | None:
    scope = getattr(request, "scope", None)
    slot = scope.get(FILE_BODY_SCOPE_KEY) if isinstance(scope, dict) else None
    return slot if isinstance(slot, FileBodySlot) else None


class FileBodyMiddleware:
    """
    ASGI middleware, around the Django application, that sends the bodies of
    file responses itself (see the module docstring): with the server's
    `http.response.pathsend` for a whole file where the server offers it,
    otherwise in `FILE_READ_BYTES` reads.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extensions = scope.get("extensions") or {}
        slot = FileBodySlot(pathsend="http.response.pathsend" in extensions)
        pending: _FileBody | None = None
        marker = FILE_BODY_HEADER.lower().encode("latin-1")

        async def send_file_bodies(message: Message) -> None:
            nonlocal pending
            if message["type"] == "http.response.start":
                headers = message.get("headers") or []
                token = next((value for name, value in headers if name.lower() == marker), None)
                if token is not None:
                    pending = slot.take(token.decode("latin-1"))
                    message = {**message, "headers": [h for h in headers if h[0].lower() != marker]}
                await send(message)
            elif pending is not None and message["type"] == "http.response.body":
                if not message.get("more_body"):
                    body, pending = pending, None
                    try:
                        await _send_file(send, body, slot.pathsend)
                    finally:
                        # The response closes it too, but only if the send
                        # ended well: a server that fails a send mid-way
                        # must not leave the file open.
                        body.file.close()
            else:
                await send(message)

        await self.app({**scope, FILE_BODY_SCOPE_KEY: slot}, receive, send_file_bodies)


# The open file by its descriptor: the server opens the very file the view
# checked and opened, even if its path has since been replaced by a link
# (workflow nodes write in the session directory).
_PROC_FD = "/proc/self/fd"
# Granian opens a pathsend path only after the application has returned, so
# the descriptor named in it is a duplicate held this long afterwards...
PATHSEND_HOLD_SECONDS = 10.0
# ...and at most this many at once; past that, bodies are streamed.
PATHSEND_MAX_HELD = 1024


class _HeldDescriptors:
    """Duplicates of open files, kept open for the server to open by /proc path, then closed."""

    def __init__(self) -> None:
        self.count = 0

    def hold(self, fd: int) -> int:
        held = os.dup(fd)
        self.count += 1
        asyncio.get_running_loop().call_later(PATHSEND_HOLD_SECONDS, self._release, held)
        return held

    def _release(self, held: int) -> None:
        self.count -= 1
        os.close(held)


_held = _HeldDescriptors()


async def _send_file(send: Send, body: _FileBody, pathsend: bool) -> None:
    fd = body.file.fileno()
    whole = body.start == 0 and body.length == os.fstat(fd).st_size
    if pathsend and whole and _held.count < PATHSEND_MAX_HELD and os.path.isdir(_PROC_FD):
        held = _held.hold(fd)
        await send({"type": "http.response.pathsend", "path": f"{_PROC_FD}/{held}"})
        return
    loop = asyncio.get_running_loop()
    offset, remaining = body.start, body.length

    def read(at: int, size: int) -> bytes:
        return os.pread(fd, size, at)

    next_read = loop.run_in_executor(None, read, offset, min(FILE_READ_BYTES, remaining))
    try:
        while remaining > 0:
            chunk = await next_read
            if not chunk:
                # The file shrank after Content-Length was sent: end the
                # connection rather than let the client take a short body as whole.
                raise OSError(f"{body.file.name!r} ended {remaining} bytes early.")
            offset += len(chunk)
            remaining -= len(chunk)
            if remaining > 0:
                # The next read overlaps the sending of this chunk.
                next_read = loop.run_in_executor(
                    None, read, offset, min(FILE_READ_BYTES, remaining)
                )
            await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
    finally:
        # The client left mid-way: the file closes after this returns, so
        # let the read in flight finish first.
        if not next_read.done():
            await asyncio.wait([next_read])
        if not next_read.cancelled():
            next_read.exception()
    if body.length == 0:
        await send({"type": "http.response.body", "body": b""})
