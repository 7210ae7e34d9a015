"""
Response bodies read from files and other blocking sources in chunks, on
worker threads.

Under ASGI they are async iterators: Django consumes a *sync* streaming
iterator under ASGI by reading it whole into a list first, which would hold
a whole file in memory. The next chunk is read only when the server has
taken the last one, so memory stays flat where the server applies
backpressure to `send` (Uvicorn does); Daphne does not, and queues whatever
a slow client has not yet taken.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest

from .file_headers import safe_content_type

# Large enough that the per-chunk cost of a thread hop is small against the
# copy, small enough that a connection holds little memory.
CHUNK_BYTES = 1 << 20
# A slow source (a compressor) hands over what it has after this long, so the
# first bytes leave early and the stream keeps moving.
MAX_BATCH_SECONDS = 0.02


class _Pump:
    """
    Pulls from a blocking chunk iterator, `batch` bytes a call (less if the
    source is slow), one caller at a time; `close()` waits for a pull in
    flight, so it is safe from any thread.
    """

    def __init__(
        self, source: Iterator[bytes], on_close: Callable[[], None] | None, batch: int
    ) -> None:
        self._source = source
        self._on_close = on_close
        self._batch = batch
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> bytes:
        with self._lock:
            if self._closed:
                return b""
            parts: list[bytes] = []
            taken = 0
            deadline = time.monotonic() + MAX_BATCH_SECONDS
            for part in self._source:
                if part:
                    parts.append(part)
                    taken += len(part)
                if taken >= self._batch or (taken and time.monotonic() > deadline):
                    break
            return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                close_source = getattr(self._source, "close", None)
                if close_source is not None:
                    close_source()
            finally:
                if self._on_close is not None:
                    self._on_close()


class _SyncBody:
    def __init__(self, pump: _Pump) -> None:
        self._pump = pump

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        chunk = self._pump.take()
        if not chunk:
            self._pump.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        self._pump.close()


class _AsyncBody:
    """Each chunk is read on a worker thread, so the event loop never waits on the disk."""

    def __init__(self, pump: _Pump) -> None:
        self._pump = pump

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await asyncio.to_thread(self._pump.take)
        except BaseException:
            # Cancelled (the client left) or failed: Django will not call
            # close(), so release the file once the read in flight is done.
            self._close_soon()
            raise
        if not chunk:
            self._close_soon()
            raise StopAsyncIteration
        return chunk

    def _close_soon(self) -> None:
        asyncio.get_running_loop().run_in_executor(None, self._pump.close)

    def close(self) -> None:
        self._pump.close()


def streaming_body(
    request: HttpRequest,
    chunks: Iterator[bytes],
    on_close: Callable[[], None] | None = None,
    batch: int = CHUNK_BYTES,
) -> _SyncBody | _AsyncBody:
    """
    `chunks` as a StreamingHttpResponse body fit for the request's handler:
    async under ASGI, sync under WSGI. Blocking reads are batched to `batch`
    bytes; `on_close` runs once, when the body ends or the response closes.
    """
    pump = _Pump(chunks, on_close, batch)
    return _AsyncBody(pump) if isinstance(request, ASGIRequest) else _SyncBody(pump)


def read_chunks(file: io.FileIO, start: int, length: int) -> Iterator[bytes]:
    """`length` bytes of `file` from `start`, CHUNK_BYTES at a time, never more in memory."""
    file.seek(start)
    remaining = length
    while remaining > 0:
        chunk = file.read(min(CHUNK_BYTES, remaining))
        if not chunk:
            # The file shrank after Content-Length was sent: end the
            # connection rather than let the client take a short body as whole.
            raise OSError(f"{file.name!r} ended {remaining} bytes early.")
        remaining -= len(chunk)
        yield chunk


def data_uri(file: io.FileIO, mime: str, max_bytes: int) -> str | None:
    """The file as a base64 data URI, or None if it is larger than `max_bytes` (0: never)."""
    if max_bytes <= 0:
        return None
    file.seek(0)
    data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        return None
    return f"data:{safe_content_type(mime)};base64,{base64.b64encode(data).decode('ascii')}"
