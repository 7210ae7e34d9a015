"""
Streaming uploads at the ASGI layer.

Django's ASGI handler spools a whole request body to a temporary file before
any view runs, so a large upload would be written to disk twice. For the
upload route only, `StreamingUploadMiddleware` does the one thing Django
cannot: it feeds the body, as it arrives, to the upload service
(`attachments.uploads`), which writes the file into staging (on a worker
thread, so the event loop keeps receiving). Django then gets the request with
an empty body and the result in the scope, and the view records the file
through the same service as one that Django read. Any file the view does not
claim is removed when the request ends.

The session is resolved and authorised once, here, before a byte of the body
is read, and handed on: a request that may not reach the session is
answered, by Django, with the same 404 as a session that does not exist, and
nothing is written.
"""

from __future__ import annotations

import asyncio
import collections
import io
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import SyncToAsync
from channels.db import database_sync_to_async
from django.core import signals
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import Resolver404, ResolverMatch, resolve, set_script_prefix
from rest_framework.renderers import JSONRenderer

from . import resumable
from .access import authorize_scope_sync
from .conf import conf
from .exceptions import ApiError, classify_server_error, server_error_response
from .header_policy import through_middleware
from .receiving import LimitExceeded
from .serializers import AttachmentSerializer
from .uploads import (
    STREAMED_UPLOAD_SCOPE_KEY,
    Admission,
    MultipartReceiver,
    StreamedUpload,
    accept_upload,
    admit_upload,
    receive_body,
)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger(__name__)

UPLOAD_VIEW_NAME = "attachments:uploads"
RESUMABLE_VIEW_NAME = "attachments:tus-upload"
# An upload body declared this small is read whole before it is authorised,
# then authorised, received and recorded in one call on an upload thread.
# Uvicorn reads this much of a body into memory before the application asks
# for it (its flow-control high-water mark), so an unauthorised client holds
# no more memory than it did.
WHOLE_BODY_BYTES = 64 * 1024


class ClientDisconnected(Exception):
    pass


def resolve_http(scope: Scope, method: str) -> ResolverMatch | None:
    """
    The URL route of an HTTP request with this method, resolved as Django
    will resolve it (under the scope's root path), or None. For ASGI
    middlewares that serve some of Django's routes themselves.
    """
    if scope["type"] != "http" or scope["method"] != method:
        return None
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    try:
        return resolve(path)
    except Resolver404:
        return None


def upload_session_id(scope: Scope) -> str | None:
    """The session id if this request is an upload POST to the attachments app, else None."""
    match = resolve_http(scope, "POST")
    if match is None or match.view_name != UPLOAD_VIEW_NAME:
        return None
    return str(match.kwargs.get("session_id", ""))


def resumable_patch_route(scope: Scope) -> tuple[str, str] | None:
    """(session id, upload id) if this request is a tus PATCH, else None."""
    match = resolve_http(scope, "PATCH")
    if match is None or match.view_name != RESUMABLE_VIEW_NAME:
        return None
    return str(match.kwargs.get("session_id", "")), str(match.kwargs.get("upload_id", ""))


# Threads that answer upload POSTs (UploadRequestHandler). A request waiting
# for its batch's commit holds one of these, never a thread other requests need.
_upload_threads = ThreadPoolExecutor(max_workers=64, thread_name_prefix="upload-request")


class UploadRequestHandler(ASGIHandler):  # type: ignore[misc]
    """
    Django's ASGI handler for upload POSTs, running a request as WSGI does:
    the request signals, the middleware chain and the view in one call, on
    a thread that stays. Django's async chain hops to a thread twice per
    middleware (each `MiddlewareMixin` runs `process_request` and
    `process_response` there), and its handler starts a thread for every
    request, for the signals and for closing the response; a small upload
    spent more time on that than on being recorded. The middlewares, and so
    the headers of the response, are the same.

    The body has already been read (`StreamingUploadMiddleware`), and the
    response is JSON, rendered before it is sent, so it is closed on that
    thread too, before it is sent. A client that leaves meanwhile does not
    stop the call: its upload is recorded or refused all the same.

    A body that was received whole is answered without the middleware chain,
    the URL resolver and DRF (`answer_streamed`): the upload service records
    it, and the response gets its headers from the header policy the feed
    uses (`attachments.header_policy`). Those layers were a quarter of a
    small upload's time and decided nothing for it: the request was routed,
    authorised (CSRF included) and admitted before its body was read. Any
    error is answered by Django's chain and the view, the one place that
    renders errors.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # No ThreadSensitiveContext: nothing here runs on a thread-sensitive executor.
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.answer(scope, send)

    async def answer(
        self, scope: Scope, send: Send, outcome: Callable[[], StreamedUpload] | None = None
    ) -> None:
        """
        Answer a request on an upload thread; `outcome`, if given, is called
        first there, inside the request's cycle, to receive or finish its body.
        """
        respond = SyncToAsync(self.respond, thread_sensitive=False, executor=_upload_threads)
        response: HttpResponseBase = await respond(scope, outcome)
        await self.send_response(response, send)

    def respond(
        self, scope: Scope, outcome: Callable[[], StreamedUpload] | None = None
    ) -> HttpResponseBase:
        """
        The response to a request whose body was read, closed and ready for
        `send_response`: all of the request's cycle on the calling thread
        (a tus PATCH calls it in the hop that ends the PATCH). `outcome`,
        if given, makes what the request's body became (`StreamedUpload`).
        """
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        response: HttpResponseBase | None = None
        made: StreamedUpload | None = None
        try:
            if outcome is not None:
                made = outcome()
                scope = _forwarded(scope, made)
            request, response = self.create_request(scope, io.BytesIO())
            if request is not None:
                response = answer_streamed(request) or self.get_response(request)
                response._handler_class = self.__class__
        finally:
            if made is not None and made.received is not None and not made.received.claimed:
                made.received.discard()
            if response is None:
                signals.request_finished.send(sender=self.__class__)
        # Closing sends request_finished, whose close_old_connections gives
        # this thread's database connection back: the thread outlives the request.
        response.close()
        return response


def answer_streamed(request: HttpRequest) -> HttpResponseBase | None:
    """
    The answer to an upload POST or a tus PATCH whose body the streaming
    middleware received whole: the upload recorded, a 201 with its
    attachment (or the PATCH's 204), with the fast paths' headers. None when
    there is an error to answer: it is left in the request's outcome for the
    view, which raises it like any other, so errors are rendered in one place.
    """
    outcome = request.scope.get(STREAMED_UPLOAD_SCOPE_KEY)
    if not isinstance(outcome, StreamedUpload) or outcome.error is not None:
        return None
    response: HttpResponseBase
    if outcome.received is not None and outcome.session is not None:
        try:
            attachment = accept_upload(outcome.session, outcome.received)
        except Exception as exc:  # noqa: BLE001 (answered by the view, see above)
            outcome.error = exc
            return None
        body = JSONRenderer().render(AttachmentSerializer(attachment).data)
        response = HttpResponse(body, status=201, content_type="application/json")
    elif outcome.resumable is not None:
        response = HttpResponse(status=204)
        del response["Content-Type"]  # no content, so no type (as DRF answers a 204)
        for name, value in resumable.response_headers(outcome.resumable).items():
            response[name] = value
    else:
        return None
    # Django's chain has CommonMiddleware set it; HTTP/1.1 keep-alive needs it.
    response["Content-Length"] = str(len(response.content))
    return through_middleware(request, response)


class StreamingUploadMiddleware:
    """
    ASGI middleware that streams upload bodies to disk before Django sees the
    request. `upload_app`, if given, answers upload POSTs once their body is
    received (an `UploadRequestHandler`); anything else goes to `app`.
    """

    def __init__(self, app: ASGIApp, upload_app: ASGIApp | None = None) -> None:
        self.app = app
        self.upload_app = upload_app or app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = upload_session_id(scope)
        patch_route = resumable_patch_route(scope) if session_id is None else None
        if session_id is None and patch_route is None:
            await self.app(scope, receive, send)
            return
        if patch_route is not None:
            await self._patch(scope, receive, send, *patch_route)
            return
        handler = self.upload_app
        declared = _declared_length(scope)
        if (
            isinstance(handler, UploadRequestHandler)
            and declared is not None
            and declared <= WHOLE_BODY_BYTES
        ):
            await self._whole(scope, receive, send, session_id, handler)
            return
        try:
            outcome = await self._receive(scope, receive, session_id)
        except ClientDisconnected:
            return
        await self._forward(scope, receive, send, outcome)

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, outcome: StreamedUpload
    ) -> None:
        """Let Django answer, with the outcome of the body in the scope and no body left."""
        try:
            await self.upload_app(_forwarded(scope, outcome), _empty_body_receive(receive), send)
        finally:
            received = outcome.received
            if received is not None and not received.claimed:
                await asyncio.to_thread(received.discard)

    async def _patch(
        self, scope: Scope, receive: Receive, send: Send, session_id: str, upload_id: str
    ) -> None:
        """
        A tus PATCH: the body goes to the upload's file as it arrives
        (attachments.resumable). Once all of it is in, one hop makes it
        durable, moves the offset and runs Django's middleware and view for
        the answer (`UploadRequestHandler.respond`): a client sends its PATCHes
        one after the other, so each hop here delays the next chunk.
        """
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        # The body's first bytes come in while the request is authorised and
        # the upload leased, instead of waiting in the socket for that hop.
        prefetch = _Prefetch(receive, 2 * conf.UPLOAD_BUFFER_BYTES)
        receive = prefetch.receive
        session, writer, error = await prefetch.during(
            _in_worker_thread(_authorize_and_open_patch, scope, session_id, upload_id, headers)
        )
        if writer is None:
            await self._forward(scope, receive, send, StreamedUpload(session=session, error=error))
            return
        try:
            last = await _receive_patch_body(writer, receive, _declared_length(scope))
        except Exception as exc:
            await _in_worker_thread(resumable.finish_patch, writer, False)
            outcome = StreamedUpload(session=session, error=_as_api_error(exc))
            await self._forward(scope, receive, send, outcome)
            return
        if last is None:  # the client left: keep what arrived, answer nobody
            await _in_worker_thread(resumable.finish_patch, writer, False)
            return
        tail: list[bytes] = last

        def finish() -> StreamedUpload:
            try:
                writer.write_chunks(tail)
            except Exception as exc:
                resumable.finish_patch(writer, False)
                return StreamedUpload(session=session, error=_as_api_error(exc))
            try:
                upload = resumable.finish_patch(writer, True)
            except Exception as exc:
                return StreamedUpload(session=session, error=_as_api_error(exc))
            return StreamedUpload(session=session, resumable=upload)

        handler = self.upload_app
        if not isinstance(handler, UploadRequestHandler):
            await self._forward(scope, receive, send, await _in_worker_thread(finish))
            return
        await handler.answer(scope, send, finish)  # one hop for both

    async def _whole(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        session_id: str,
        handler: UploadRequestHandler,
    ) -> None:
        """A small upload: its body read whole, then one hop authorises, receives and records it."""
        pieces = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # nothing was written
            pieces.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(pieces)
        content_type = dict(scope["headers"]).get(b"content-type", b"")

        def outcome() -> StreamedUpload:
            try:
                session, admission, error = _authorize_and_admit(
                    scope, session_id, content_type, len(body)
                )
            finally:
                # The upload may now wait for its batch's commit, which another
                # thread runs: a pooled connection goes back to the pool first,
                # or fifty waiting uploads hold fifty (a persistent one stays).
                close_old_connections()
            if admission is None:
                return StreamedUpload(session=session, error=error)
            try:
                return StreamedUpload(session=session, received=receive_body(admission, [body]))
            except Exception as exc:
                return StreamedUpload(session=session, error=_as_api_error(exc))

        await handler.answer(scope, send, outcome)

    async def _receive(self, scope: Scope, receive: Receive, session_id: str) -> StreamedUpload:
        headers = {name.lower(): value for name, value in scope["headers"]}
        declared = _declared_length(scope)
        # Any thread will do (the call closes its connection when done): the
        # one thread that thread-sensitive calls share would queue every
        # upload of the process behind each other's authorisation.
        session, admission, error = await database_sync_to_async(
            _authorize_and_admit, thread_sensitive=False
        )(scope, session_id, headers.get(b"content-type", b""), declared)
        if admission is None:
            return StreamedUpload(session=session, error=error)

        receiver = MultipartReceiver(admission)
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnected()
                body = message.get("body", b"")
                if body:
                    await receiver.feed(body)
                if not message.get("more_body", False):
                    break
            received = receiver.finish()
        except LimitExceeded:
            await receiver.abort()
            return StreamedUpload(session=session, error=admission.allowance.exceeded())
        except Exception as exc:
            await receiver.abort()
            return StreamedUpload(session=session, error=_as_api_error(exc))
        except BaseException:
            await receiver.abort()
            raise
        return StreamedUpload(session=session, received=received)


class _Prefetch:
    """
    A request's body messages received while other work runs (`during`),
    up to `limit` bytes held in memory, then handed out in order by
    `receive()` before it reads on. A receive still pending when the work
    ends is kept for `receive()`, so no message is lost or read twice.
    """

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self._held: collections.deque[Message] = collections.deque()
        self._held_bytes = 0
        self._ended = False  # the body's last message, or the disconnect, is held
        self._next: asyncio.Future[Message] | None = None

    async def during(self, work: Awaitable[Any]) -> Any:
        task = asyncio.ensure_future(work)
        while not self._ended and self._held_bytes < self._limit:
            if self._next is None:
                self._next = asyncio.ensure_future(self._receive())
            await asyncio.wait({task, self._next}, return_when=asyncio.FIRST_COMPLETED)
            if not self._next.done():
                break
            message, self._next = self._next.result(), None
            self._held.append(message)
            self._held_bytes += len(message.get("body", b""))
            self._ended = message["type"] != "http.request" or not message.get("more_body")
            if task.done():
                break
        return await task

    async def receive(self) -> Message:
        if self._held:
            return self._held.popleft()
        if self._next is not None:
            pending, self._next = self._next, None
            return await pending
        return await self._receive()


async def _receive_patch_body(
    writer: Any, receive: Receive, declared: int | None = None
) -> list[bytes] | None:
    """
    Write a PATCH body as it arrives. One write is on a worker thread while
    the next buffer is received. The upload's lease is renewed when due as
    long as bytes come, however slowly. Returns None if the client left
    (what came is written), else the body's last pieces, not yet written:
    the caller writes them in the hop that ends the PATCH, one hop fewer
    between the last byte and the answer.
    """
    pending: list[bytes] = []
    pending_bytes = received = 0
    buffer_bytes = conf.UPLOAD_BUFFER_BYTES  # read once, not for each of the body's messages
    writing: asyncio.Future[None] | None = None

    async def write(chunks: list[bytes], push: bool = False) -> asyncio.Future[None]:
        if writing is not None:
            await writing
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(None, writer.write_chunks, chunks, push)

    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            if writer.renewal_due:
                await _in_worker_thread(writer.renew)
            body = message.get("body", b"")
            if body:
                pending.append(body)
                pending_bytes += len(body)
            if not message.get("more_body", False):
                return pending
            received += len(body)
            # Within the body's last buffer each piece goes to the disk as it
            # comes, so that the last one finds no buffer's worth still to
            # write on the way to the answer.
            last_buffer = declared is not None and declared - received < buffer_bytes
            if pending_bytes >= buffer_bytes or (last_buffer and pending):
                # The pieces as received: joining them would copy each once more.
                chunks, pending, pending_bytes = pending, [], 0
                writing = await write(chunks, last_buffer)
        if pending:
            writing = await write(pending)
        return None
    finally:
        if writing is not None:
            await writing


async def _in_worker_thread(function: Callable[..., Any], *args: Any) -> Any:
    """
    A database call of a PATCH on a thread of the pool, not the one thread
    Django's sync views share: a PATCH's few database trips do not queue
    behind other requests' views.
    """
    return await database_sync_to_async(function, thread_sensitive=False)(*args)


def _authorize_and_open_patch(
    scope: Scope, session_id: str, upload_id: str, headers: dict[str, str]
) -> tuple[Any, resumable.PatchWriter | None, ApiError | None]:
    """The session, authorised, and the PATCH's writer: one thread hop, one connection."""
    session = None
    try:
        session = authorize_scope_sync(scope, session_id)
        return session, resumable.open_patch(session, upload_id, headers), None
    except Exception as exc:
        return session, None, _as_api_error(exc)


def _authorize_and_admit(
    scope: Scope, session_id: str, content_type: bytes, declared: int | None
) -> tuple[Any, Admission | None, ApiError | None]:
    """The session, authorised, and its upload admitted: one thread hop, one connection."""
    session = None
    try:
        session = authorize_scope_sync(scope, session_id)
        return session, admit_upload(session, content_type, declared), None
    except Exception as exc:
        return session, None, _as_api_error(exc)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _as_api_error(exc: Exception) -> ApiError:
    """The client's error, or the server's own (507 disk full, 503 database down)."""
    classified = classify_server_error(exc)
    if classified is None:
        raise exc
    return classified


def _forwarded(scope: Scope, outcome: StreamedUpload) -> Scope:
    """The scope Django gets: the body's outcome in it, and an empty body announced."""
    forwarded = dict(scope)
    forwarded[STREAMED_UPLOAD_SCOPE_KEY] = outcome
    forwarded["headers"] = [
        (name, b"0" if name.lower() == b"content-length" else value)
        for name, value in scope["headers"]
    ]
    return forwarded


def _empty_body_receive(receive: Receive) -> Receive:
    """A receive callable that reports an empty body, then waits for the disconnect."""
    sent_body = False

    async def wrapped() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": b"", "more_body": False}
        while True:
            # Whatever is left of an over-size body is read and dropped.
            message = await receive()
            if message["type"] == "http.disconnect":
                return message

    return wrapped


class JSONServerErrorMiddleware:
    """
    The outermost HTTP middleware: an exception that escapes everything
    inside (the ASGI middlewares included) before a response has started is
    answered in the project's JSON shape rather than the server's plain-text
    500, as 507 for a full disk and 503 (with Retry-After) for an unreachable
    database or channel layer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            logger.exception(
                "Unhandled error answering %s %s", scope.get("method"), scope.get("path")
            )
            status, payload, extra = server_error_response(exc)
            body = json.dumps(payload).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
