"""
The event feed served straight from ASGI.

Django's ASGI handler gives every request in flight a thread of its own
(its sync signal receivers and middleware run there), async views
included, so a thousand waiting long-polls would be a thousand idle
threads. `EventFeedMiddleware` answers GET requests for the URLs of the
`artifacts` feed views itself, with the same code (`respond_page`,
`respond_stream`), before Django sees them: a waiting request is then only
a coroutine. Everything else goes on to Django. Of Django's middleware,
the part that sets security and CORS headers runs here too, from the same
settings (`attachments.header_policy`), so these responses carry the same headers
as every other.

`ShutdownMiddleware`, outermost, answers the ASGI lifespan and lets go of
the live clients when the worker stops (see `artifacts.shutdown`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from attachments.exceptions import server_error_response
from attachments.header_policy import describe, prepare_headers, through_middleware
from attachments.routes import resolve_http

from . import eager, shutdown
from .admission import admission
from .authorization import authorize
from .conf import conf
from .sse import CONTENT_TYPE, HEADERS
from .views import JSON, PAGE_HEADERS, page_response, respond_page, respond_stream
from .wakeups import hub

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PAGE_VIEW = "artifacts:events"
STREAM_VIEW = "artifacts:event-stream"


def feed_route(scope: Scope) -> tuple[str, str] | None:
    """(view name, session id) if this is a GET for one of the feed views, else None."""
    route = resolve_http(scope, "GET")
    if route is None or route.view_name not in (PAGE_VIEW, STREAM_VIEW):
        return None
    return route.view_name, str(route.kwargs.get("session_id", ""))


class EventFeedMiddleware:
    """ASGI middleware that serves the artifact event feed without a thread per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = feed_route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        # A long-poll's wait counts from here, not from after its checks:
        # under a burst of arrivals those can queue.
        arrived = asyncio.get_running_loop().time()
        # Counted until the response is sent, so a shutdown waits for it.
        with hub().live_request():
            # The response is made in this task, and a client that leaves
            # cancels it (`_Departure`): one task more per request, not two
            # and the waits between them, since ten thousand long-polls
            # answered together each pass through here.
            departure = _Departure(receive)
            try:
                # In a burst, the work below waits its turn so that the loop
                # keeps reading (and stamping) new arrivals
                # (`artifacts.admission`); watching for the client's
                # departure is part of that work.
                await admission().turn()
                departure.start()
                await self._respond(route, scope, send, arrived, departure)
            except asyncio.CancelledError:
                if not departure.forgive():
                    raise
            finally:
                departure.close()

    async def _respond(
        self,
        route: tuple[str, str],
        scope: Scope,
        send: Send,
        arrived: float,
        departure: _Departure,
    ) -> None:
        view_name, session_id = route
        # The request as Django would see it (no body: these are GETs), for
        # its host check and for the header middleware.
        request = ASGIRequest(scope, io.BytesIO())
        try:
            request.get_host()
        except DisallowedHost:
            response: HttpResponseBase = JsonResponse(
                {"detail": "Bad request.", "code": "bad_request"}, status=400
            )
            # Only an HTTPS redirect would ask for the host again; it cannot be made.
            with contextlib.suppress(DisallowedHost):
                response = through_middleware(request, response)
            await _send_response(send, request, response, through=False)
            return
        # The middleware runs once, here: over an empty response with the
        # headers of the page to come, whose headers then serve for it. A
        # long-poll answered at its deadline, with ten thousand others, then
        # only sends.
        early, page_headers = prepare_headers(request, JSON, PAGE_HEADERS)
        if early is not None:
            await _send_response(send, request, early, through=False)
            return
        query_string = scope.get("query_string", b"").decode("latin-1")
        params = dict(parse_qsl(query_string, keep_blank_values=True))
        try:
            if view_name == PAGE_VIEW:
                # A long-poll that times out is answered from the callback
                # that expires every waiter due at that moment (`feed.poll`):
                # ten thousand falling due together have their answers sent
                # one after another, before their tasks resume to finish.
                answer = _EarlyAnswer(send, page_headers, departure)
                status, body = await respond_page(
                    session_id, params, lambda: authorize(scope, session_id), arrived, answer
                )
                if answer.started:
                    await answer.finished()
                elif status == 200:
                    await _send_prepared(send, page_headers, body)
                else:
                    await _send_response(send, request, page_response(status, body))
                return
            headers = dict(scope.get("headers", []))
            last_event_id = headers.get(b"last-event-id")
            status, stream = await respond_stream(
                session_id,
                params,
                None if last_event_id is None else last_event_id.decode("latin-1"),
                lambda: authorize(scope, session_id),
            )
        except Exception as exc:
            # A database or layer outage is a 503 with Retry-After, as everywhere
            # else, and one line in the log; anything else is a bug, logged whole.
            status, payload, extra = server_error_response(exc)
            if status == 503:
                logger.warning("Artifact event feed unavailable: %s", exc)
            else:
                logger.exception("Artifact event feed failed")
            response = JsonResponse(payload, status=status, headers=PAGE_HEADERS)
            for name, value in extra:
                response[name.decode()] = value.decode()
            await _send_response(send, request, response)
            return
        if isinstance(stream, dict):
            await _send_json(send, request, status, stream)
        else:
            await _send_stream(send, request, stream)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _Departure:
    """
    Cancels the current task when the client disconnects, until `close`.
    The cancellation is repeated every second while the task runs on: on
    Python 3.11, `asyncio.wait_for` drops a cancellation that arrives as its
    awaitable completes (see `artifacts.cancellation`).
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task = asyncio.current_task()
        self._cancels = 0
        self._open = True
        self._listener: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start listening (until then, a departure goes unnoticed)."""
        if self._open and self._listener is None:
            self._listener = asyncio.create_task(_until_disconnect(self._receive))
            self._listener.add_done_callback(self._left)

    def _left(self, listener: asyncio.Task[None]) -> None:
        if not self._open or listener.cancelled() or listener.exception() is not None:
            return
        self._cancel()

    def _cancel(self) -> None:
        if self._open and self._task is not None:
            self._cancels += 1
            self._task.cancel()
            asyncio.get_running_loop().call_later(1, self._cancel)

    def forgive(self) -> bool:
        """Whether a CancelledError came from the departure alone (it is then withdrawn)."""
        if not self._cancels or self._task is None:
            return False
        remaining = 0
        for _ in range(self._cancels):
            remaining = self._task.uncancel()
        self._cancels = 0
        return remaining == 0

    def close(self) -> None:
        self._open = False
        if self._listener is not None:
            self._listener.cancel()


async def _send_response(
    send: Send, request: HttpRequest, response: HttpResponseBase, through: bool = True
) -> None:
    """Send a response with a body in memory, after the header middleware (`through`)."""
    if through:
        response = through_middleware(request, response)
    content = b"" if response.streaming else response.content  # type: ignore[attr-defined]
    if not response.has_header("Content-Length"):
        response["Content-Length"] = str(len(content))
    await send(describe(response))
    await send({"type": "http.response.body", "body": content})


class _EarlyAnswer:
    """A long-poll's 200, sent at its deadline from outside its task (see `_respond`)."""

    def __init__(
        self, send: Send, headers: list[tuple[bytes, bytes]], departure: _Departure
    ) -> None:
        self._send = send
        self._headers = headers
        self._departure = departure
        self.started = False
        self._rest: asyncio.Task[None] | None = None
        self._failure: Exception | None = None

    def __call__(self, body: bytes) -> None:
        self.started = True
        # Answered: a client leaving from now on (or the server's own
        # http.disconnect once the response is complete) cancels nothing.
        self._departure.close()
        try:
            # At once, unless the socket cannot take it (a task then finishes).
            self._rest = eager.start(_send_prepared(self._send, self._headers, body))
        except Exception as exc:
            self._failure = exc

    async def finished(self) -> None:
        """In the request's task: wait for the rest of the send, or raise what it raised."""
        if self._rest is not None:
            await self._rest
        if self._failure is not None:
            raise self._failure


async def _send_prepared(send: Send, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """Send a 200 with headers the middleware has already set (`prepare_headers`)."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*headers, (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, request: HttpRequest, status: int, body: dict[str, Any]) -> None:
    await _send_response(send, request, JsonResponse(body, status=status, headers=PAGE_HEADERS))


async def _send_stream(
    send: Send, request: HttpRequest, stream: AsyncGenerator[bytes, None]
) -> None:
    async with contextlib.aclosing(stream):
        # This response only carries the headers; the body comes from `stream`.
        carrier = StreamingHttpResponse((), content_type=CONTENT_TYPE, headers=HEADERS)
        response = through_middleware(request, carrier)
        if response is not carrier:
            await _send_response(send, request, response, through=False)
            return
        await send(describe(response))
        async for chunk in stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


class ShutdownMiddleware:
    """
    The project's outermost ASGI app. It answers the `lifespan` scope itself
    (startup: nothing to do; shutdown: drain the live clients, see
    `EventHub.drain`), and on its first call of any kind puts the shutdown
    signal hook in place (`artifacts.shutdown.install`).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        shutdown.install()
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await hub().drain(conf.SHUTDOWN_GRACE / 2)
                await send({"type": "lifespan.shutdown.complete"})
                return
