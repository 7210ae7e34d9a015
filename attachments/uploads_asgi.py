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
import contextlib
import io
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import SyncToAsync
from channels.db import database_sync_to_async
from django.core import signals
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import set_script_prefix
from rest_framework.renderers import JSONRenderer

from . import resumable
from .access import authorize_scope_sync
from .conf import conf
from .exceptions import ApiError, classify_server_error, server_error_response
from .header_policy import through_middleware
from .receiving import LimitExceeded
from .routes import resolve_http
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


# Threads that answer upload POSTs (UploadRequestHandler) and write tus
# PATCH bodies (_PatchBody). A request waiting for its batch's commit holds
# one of these, never a thread other requests need; a PATCH holds one only
# while its bytes flow.
UPLOAD_THREADS = 64
_upload_threads = ThreadPoolExecutor(
    max_workers=UPLOAD_THREADS, thread_name_prefix="upload-request"
)


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
        (a tus PATCH's thread calls it once the PATCH has ended). `outcome`,
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
        (attachments.resumable), written in order by `_PatchBody` on an
        upload thread, which also authorises the request and leases the
        upload first, and at the end makes the bytes durable, moves the
        offset and runs Django's middleware and view for the answer
        (`UploadRequestHandler.respond`). The event loop only receives: a
        client sends its PATCHes one after the other, so every trip between
        the loop and a thread delays the next chunk.
        """
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        handler = self.upload_app if isinstance(self.upload_app, UploadRequestHandler) else None
        body = _PatchBody(scope, session_id, upload_id, headers, handler)
        declared = _declared_length(scope)
        buffer_bytes = conf.UPLOAD_BUFFER_BYTES  # read once, not for each of the body's messages
        pending: list[bytes] = []
        pending_bytes = received = 0
        early: asyncio.Future[Message] | None = None
        try:
            while not body.decided:
                if body.opened:
                    message = await receive()
                else:
                    # Until the upload is leased, a refusal is answered as soon
                    # as it is known, not when the client sends more.
                    early = early or asyncio.ensure_future(receive())
                    await asyncio.wait({early, body.result}, return_when=asyncio.FIRST_COMPLETED)
                    if not early.done():
                        break
                    message, early = early.result(), None
                if message["type"] == "http.disconnect":
                    body.leave(pending)  # keep what arrived, answer nobody
                    break
                chunk = message.get("body", b"")
                if chunk:
                    pending.append(chunk)
                    pending_bytes += len(chunk)
                if not message.get("more_body", False):
                    body.end(pending)
                    break
                received += len(chunk)
                # Within the body's last buffer each piece goes to the disk as
                # it comes, so that the last one finds no buffer's worth still
                # to write on the way to the answer. A slow body is written
                # when the lease is due for renewal, which its write renews.
                last_buffer = declared is not None and declared - received < buffer_bytes
                if pending and (pending_bytes >= buffer_bytes or last_buffer or body.renewal_due):
                    # The pieces as received: joining them would copy each once more.
                    await body.write(pending, pending_bytes, push=last_buffer)
                    pending, pending_bytes = [], 0
        finally:
            if early is not None:
                early.cancel()
            # Cancelled (the server stops): what arrived is kept, the lease let go.
            body.leave(pending)
        result = await body.result
        if result is None:
            return  # the client left
        outcome, response = result
        if response is None:
            await self._forward(scope, receive, send, outcome)
        else:
            assert handler is not None
            await handler.send_response(response, send)

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


# How long a PATCH's thread waits for the body's next buffer before letting go.
_LINGER_SECONDS = 0.005


class _PatchBody:
    """
    The thread side of one tus PATCH. The event loop hands it the body's
    buffers as they arrive (`write`, then `end`, or `leave` if the client
    left); a thread of `_upload_threads` works through them in order:
    authorise and lease first (`_authorize_and_open_patch`), append each
    buffer, then finish the PATCH and make its answer. While the client
    sends faster than the disk takes it, one thread stays with the PATCH
    from the lease to the answer, with no trip back to the event loop in
    between; when the client pauses it lets go of the thread and its
    database connection until more arrives, so a slow client holds neither.

    At most `budget` bytes wait in memory for the disk: the loop stops
    receiving beyond that (`write` waits), and the client's socket with it.
    `result` is (StreamedUpload, the response or None) once the PATCH is
    answered or failed, None if the client left.
    """

    def __init__(
        self,
        scope: Scope,
        session_id: str,
        upload_id: str,
        headers: dict[str, str],
        handler: UploadRequestHandler | None,
    ) -> None:
        self._scope = scope
        self._route = (session_id, upload_id)
        self._headers = headers
        self._handler = handler
        self._budget = 2 * conf.UPLOAD_BUFFER_BYTES
        self._loop = asyncio.get_running_loop()
        self.result: asyncio.Future[tuple[StreamedUpload, HttpResponseBase | None] | None] = (
            self._loop.create_future()
        )
        # Shared with the thread, under the lock.
        self._lock = threading.Lock()
        self._more = threading.Condition(self._lock)
        self._items: collections.deque[tuple[Any, ...]] = collections.deque()
        self._draining = False
        self._queued = 0  # bytes handed over and not yet written
        self._waiting = False  # the loop waits for the queue to shrink
        self._room = asyncio.Event()
        # Only the loop reads and writes these.
        self._closed = False  # end() or leave() was called
        self._drains: set[asyncio.Future[None]] = set()
        # Only the thread writes these.
        self._session: Any = None
        self._writer: resumable.PatchWriter | None = None
        self._decided = False
        self._submit(("open",))

    # The event loop's side.

    @property
    def decided(self) -> bool:
        """The PATCH failed or was answered: the rest of the body is not wanted."""
        return self.result.done()

    @property
    def opened(self) -> bool:
        """The request was authorised and the upload leased: bytes go to its file."""
        return self._writer is not None

    @property
    def renewal_due(self) -> bool:
        writer = self._writer
        return writer is not None and writer.renewal_due

    async def write(self, chunks: list[bytes], size: int, push: bool) -> None:
        """Hand over the next buffer; waits while too many bytes wait for the disk."""
        with self._lock:
            self._queued += size
            full = self._queued > self._budget
            if full:
                self._waiting = True
                self._room.clear()
        self._submit(("write", chunks, size, push))
        if full:
            await self._room.wait()

    def end(self, tail: list[bytes]) -> None:
        """The body's last pieces: write them, finish the PATCH and make its answer."""
        self._closed = True
        self._submit(("end", tail))

    def leave(self, pending: list[bytes]) -> None:
        """The client left (or the request was cancelled): keep what arrived, answer nobody."""
        if self._closed:
            return
        self._closed = True
        self._submit(("left", pending))

    def _submit(self, item: tuple[Any, ...]) -> None:
        with self._lock:
            self._items.append(item)
            if self._draining:
                self._more.notify()
                return
            self._draining = True
        # As a sync view runs (asgiref's thread handler): the thread knows the
        # serving loop, where a notification it causes is handed
        # (artifacts.events); its connection is given back when it lets go.
        drain = database_sync_to_async(
            self._drain, thread_sensitive=False, executor=_upload_threads
        )
        task = asyncio.ensure_future(drain())
        self._drains.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._drains.discard)

    # The thread's side.

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._items and not self._decided:
                    # The next buffer is usually a moment away: waiting for it
                    # here costs less than a new trip to a thread.
                    self._more.wait(_LINGER_SECONDS)
                if not self._items:
                    self._draining = False
                    return
                item = self._items.popleft()
            try:
                self._work(item)
            except BaseException as exc:
                self._decide(exc)
                if not isinstance(exc, Exception):
                    raise

    def _work(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "write":
            self._written(item[2])
        if self._decided:
            return  # failed before: the rest of the body goes nowhere
        if kind == "open":
            self._session, self._writer, error = _authorize_and_open_patch(
                self._scope, *self._route, self._headers
            )
            if self._writer is None:
                self._answer(StreamedUpload(session=self._session, error=error))
            return
        writer = self._writer
        assert writer is not None
        if kind == "write":
            _, chunks, _size, push = item
            try:
                if writer.renewal_due:
                    writer.renew()
                writer.write_chunks(chunks, push)
            except Exception as exc:
                self._answer(self._failed(writer, exc))
        elif kind == "end":
            self._answer(self._finish(writer, item[1]))
        else:  # "left"
            try:
                if item[1]:
                    writer.write_chunks(item[1])
            finally:
                resumable.finish_patch(writer, False)
            self._decide(None)

    def _finish(self, writer: resumable.PatchWriter, tail: list[bytes]) -> StreamedUpload:
        try:
            writer.write_chunks(tail)
        except Exception as exc:
            return self._failed(writer, exc)
        try:
            upload = resumable.finish_patch(writer, True)
        except Exception as exc:
            return StreamedUpload(session=self._session, error=_as_api_error(exc))
        return StreamedUpload(session=self._session, resumable=upload)

    def _failed(self, writer: resumable.PatchWriter, exc: Exception) -> StreamedUpload:
        """A write failed: what was written before it is kept, the lease let go, the error told."""
        resumable.finish_patch(writer, False)
        return StreamedUpload(session=self._session, error=_as_api_error(exc))

    def _answer(self, outcome: StreamedUpload) -> None:
        """Decide the PATCH: its response made here, on this thread, if Django's handler is ours."""
        response = (
            None if self._handler is None else self._handler.respond(self._scope, lambda: outcome)
        )
        self._decide((outcome, response))

    def _written(self, size: int) -> None:
        with self._lock:
            self._queued -= size
            wake = self._waiting and self._queued <= self._budget
            if wake:
                self._waiting = False
        if wake:
            self._loop.call_soon_threadsafe(self._room.set)

    def _decide(self, result: Any) -> None:
        if self._decided:
            return
        self._decided = True
        if isinstance(result, BaseException):
            if self._writer is not None:
                # A bug: the offset stays where it was, the lease is let go.
                with contextlib.suppress(Exception):
                    self._writer.release()
            self._loop.call_soon_threadsafe(_settle, self.result, None, result)
        else:
            self._loop.call_soon_threadsafe(_settle, self.result, result, None)
        self._loop.call_soon_threadsafe(self._room.set)  # a waiting loop sees the decision


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


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
