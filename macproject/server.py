"""
The default server: Uvicorn (httptools) with the connection limits it lacks.

Uvicorn times out only an idle keep-alive connection. A client that opens a
connection and sends its headers one byte at a time, or stops halfway through
a body, holds the connection (and a request's resources) for as long as it
likes, and httptools accepts headers of any size. `GuardedHttpToolsProtocol`
adds, per connection:

- a header timeout: the request line and headers must arrive within
  `SERVER_HEADER_TIMEOUT` seconds of the connection (or of the request's
  first byte on a kept-alive one); else 408 and the connection is closed;
- a header size limit: more than `SERVER_MAX_HEADER_BYTES` of request line
  and headers gets 431 and the connection is closed;
- a body idle timeout: while the application waits for more of a request
  body, `SERVER_BODY_IDLE_TIMEOUT` seconds without a byte close the
  connection (the application sees `http.disconnect`). Time during which the
  application is not reading (flow control paused) does not count.

The keep-alive timeout is Uvicorn's own (`SERVER_KEEP_ALIVE_TIMEOUT`).
`scripts/serve` runs `python -m macproject.server`; behind nginx, its
`client_header_timeout`, `client_body_timeout` and
`large_client_header_buffers` do the same at the proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    body_idle_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_header_bytes: int = 64 * 1024


def _json_response(status: int, reason: str, detail: str, code: str) -> bytes:
    body = json.dumps({"detail": detail, "code": code}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "x-content-type-options: nosniff\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


REQUEST_TIMEOUT = _json_response(
    408, "Request Timeout", "The request's headers did not arrive in time.", "request_timeout"
)
HEADERS_TOO_LARGE = _json_response(
    431,
    "Request Header Fields Too Large",
    "The request's headers are too large.",
    "headers_too_large",
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol with header and body timeouts and a header size limit."""

    limits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_headers = True
        self._header_bytes = 0
        self._counted_header_bytes = 0
        self._in_body = False
        self._refusal: bytes | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # Connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        if self._awaiting_headers:
            self._header_bytes += len(data)
        elif self._in_body:
            self._arm_body_timer()
        super().data_received(data)
        if (
            self._refusal is None
            and self._awaiting_headers
            and self._header_bytes > self.limits.max_header_bytes
        ):
            self._refusal = HEADERS_TOO_LARGE
        if self._refusal is not None:
            self._refuse(self._refusal)

    def handle_websocket_upgrade(self) -> None:
        # From here on the socket belongs to the WebSocket protocol and its own timeouts.
        self._cancel_timers()
        super().handle_websocket_upgrade()

    # Parser callbacks

    def on_message_begin(self) -> None:
        self._awaiting_headers = True
        self._counted_header_bytes = 0
        if self._header_timer is None:
            self._arm_header_timer()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._counted_header_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._counted_header_bytes += len(name) + len(value) + 4
        if self._counted_header_bytes > self.limits.max_header_bytes:
            self._refusal = HEADERS_TOO_LARGE
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._counted_header_bytes > self.limits.max_header_bytes:
            self._refusal = HEADERS_TOO_LARGE
        if self._refusal is not None:
            return
        self._awaiting_headers = False
        self._header_bytes = 0
        self._cancel(self._header_timer)
        self._header_timer = None
        super().on_headers_complete()
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._in_body = True
            self._arm_body_timer()

    def on_body(self, body: bytes) -> None:
        if self._refusal is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._cancel(self._body_timer)
        self._body_timer = None
        if self._refusal is None:
            super().on_message_complete()

    # Timers

    def _arm_header_timer(self) -> None:
        self._cancel(self._header_timer)
        self._header_timer = self.loop.call_later(
            self.limits.header_timeout, self._headers_too_slow
        )

    def _arm_body_timer(self) -> None:
        self._cancel(self._body_timer)
        self._body_timer = self.loop.call_later(self.limits.body_idle_timeout, self._body_stalled)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            self._refuse(REQUEST_TIMEOUT)

    def _body_stalled(self) -> None:
        self._body_timer = None
        if not self._in_body or self.transport.is_closing():
            return
        if self.flow.read_paused:
            # The application is not reading: waiting is not the client's fault.
            self._arm_body_timer()
            return
        self.logger.info("Closing a connection whose request body stalled.")
        self.transport.close()

    def _refuse(self, response: bytes) -> None:
        self._refusal = response
        self._cancel_timers()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            self._cancel(timer)
        self._header_timer = self._body_timer = None

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class bound to `limits` (Uvicorn instantiates it per connection)."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def limits_from_settings() -> ConnectionLimits:
    from django.conf import settings

    defaults = ConnectionLimits()
    return ConnectionLimits(
        header_timeout=float(getattr(settings, "SERVER_HEADER_TIMEOUT", defaults.header_timeout)),
        body_idle_timeout=float(
            getattr(settings, "SERVER_BODY_IDLE_TIMEOUT", defaults.body_idle_timeout)
        ),
        keep_alive_timeout=float(
            getattr(settings, "SERVER_KEEP_ALIVE_TIMEOUT", defaults.keep_alive_timeout)
        ),
        max_header_bytes=int(
            getattr(settings, "SERVER_MAX_HEADER_BYTES", defaults.max_header_bytes)
        ),
    )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve macproject with connection limits.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    options = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "macproject.settings")
    limits = limits_from_settings()
    from django.conf import settings

    from macproject.cpu import pin_server

    # Before Uvicorn starts a thread: threads keep the CPUs of the thread that starts them.
    pin_server(settings.SERVER_CPU)
    uvicorn.run(
        "macproject.asgi:application",
        host=options.host,
        port=options.port,
        lifespan="off",
        access_log=False,
        http=guarded_protocol(limits),
        timeout_keep_alive=max(1, round(limits.keep_alive_timeout)),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
