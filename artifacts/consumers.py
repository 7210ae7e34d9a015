from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch

from attachments.access import (
    Credentials,
    credentials_from_scope,
    owner_for_new_session,
    session_for,
)
from attachments.exceptions import (
    ApiError,
    ServerError,
    SessionNotFound,
    classify_server_error,
    error_payload,
)
from attachments.sessions import create_session

from .authorization import authorize
from .cancellation import cancel_and_wait
from .feed import FeedQuery, Page, astart_cursor, parse_query, push
from .groups import session_group
from .wakeups import SERVICE_RESTART, hub

logger = logging.getLogger(__name__)

# Close codes in the 4000-4999 range reserved for applications, echoing HTTP.
CLOSE_CODES = {400: 4400, 401: 4401, 403: 4403, 404: 4404, 409: 4409}
# A failure of the server's own (a database outage, a bug) closes with the
# standard codes: 1013 "try again later" when it is transient, else 1011.
SERVER_CLOSE_CODES = {503: 1013}


def close_code(exc: ApiError) -> int:
    """The close code that reports `exc` to a client."""
    if exc.status_code >= 500:
        return SERVER_CLOSE_CODES.get(exc.status_code, 1011)
    return CLOSE_CODES.get(exc.status_code, 4400)


# Query-string keys that are not feed parameters.
_NOT_FEED_PARAMS = {"session_id", "token"}

# Messages on the control socket that another app answers (the `workflows`
# app's `human_input`), so that this app routes them without importing it.
# A handler takes the session id and the message's `data`, and returns the
# message to send back; an `ApiError` it raises is sent as an `error`.
MessageHandler = Callable[[str, Any], Awaitable[dict[str, Any]]]
_message_handlers: dict[str, MessageHandler] = {}


def register_message_handler(kind: str, handler: MessageHandler) -> None:
    """Answer control-socket messages of type `kind` with `handler` (from `AppConfig.ready`)."""
    _message_handlers[kind] = handler


class ArtifactSocket(AsyncJsonWebsocketConsumer):
    """
    A socket that pushes its session's artifact events:
    `{"type": "artifact_created", "data": {"session_id", "events", "next_cursor"}}`.

    The subscription starts at connect, from `?after=N` (backlog, then live)
    or from the session's last event when the socket sent `connection`,
    with the feed's filters from the query string.
    `{"type": "subscribe", "after": N, ...filters}` restarts it (answered by
    `subscribed`); `{"type": "unsubscribe"}` stops it. One reader follows the
    cursor from backlog into live events, so nothing is lost or repeated
    between the two. Cursor errors arrive as `error` messages carrying
    `resume_after`, and the socket stays open.

    Artifact events reach the socket through the process's hub
    (`artifacts.wakeups`), not through a channel of its own, so the socket
    takes nothing from the channel layer unless `groups_of_its_own` says
    it has groups to join (the control socket's run messages).
    """

    session_id: str | None = None
    _follower: asyncio.Task[None] | None = None
    _accepted = False
    groups_of_its_own = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """
        `AsyncConsumer.__call__`, except that the socket has a layer channel
        only if it needs one, and a failing layer does not end it: the
        socket waits for the layer to come back and joins its groups again
        (`channels_receive`).
        """
        self.scope = scope
        self.base_send = send
        self.channel_layer = None
        receivers = [receive]
        if self.groups_of_its_own:
            self.channel_layer = get_channel_layer(self.channel_layer_alias)
            if self.channel_layer is not None:
                # Local to this process for every layer Channels ships: no I/O.
                self.channel_name = await self.channel_layer.new_channel()
                receivers.append(self.channel_receive)
        try:
            await await_many_dispatch(receivers, self.dispatch)
        except StopConsumer:
            pass

    async def dispatch(self, message: dict[str, Any]) -> None:
        """
        `AsyncConsumer.dispatch` without its `aclose_old_connections()`, a
        thread hop for every message: these sockets touch the database only
        through `database_sync_to_async`, which does that cleanup itself.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        """
        Connect; a failure of the server's (the database down, a bug) is
        reported like any refusal, as a JSON `error` and a close, rather than
        as the plain-text 500 the ASGI server would answer the handshake with.
        """
        try:
            await super().websocket_connect(message)
        except StopConsumer:
            raise
        except Exception as exc:
            await self.report_failure(exc, closing=True)

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        """
        Handle a client's message; a transient failure (503) is reported and
        the socket stays open, while anything else also closes it with 1011.
        """
        try:
            await super().websocket_receive(message)
        except StopConsumer:
            raise
        except Exception as exc:
            await self.report_failure(exc, closing=False)

    async def report_failure(self, exc: Exception, *, closing: bool) -> None:
        """Tell the client about a failure that is not its doing; close unless it is transient."""
        error = classify_server_error(exc)
        if error is None:
            logger.error("WebSocket message failed", exc_info=exc)
            error = ServerError()
            closing = True
        else:
            logger.warning("WebSocket answered %s: %s", error.status_code, exc)
        if not self._accepted:
            await self.refuse(error)
            return
        await self.send_api_error(error)
        if closing:
            await self.close(code=close_code(error))

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """`AsyncWebsocketConsumer.websocket_disconnect` without its thread hop (see `dispatch`)."""
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def channel_receive(self) -> dict[str, Any]:
        """The next message for this socket's channel; rides out layer outages."""
        layer = self.channel_layer
        assert layer is not None
        current = hub()
        while True:
            await current.layer_available()
            try:
                return dict(await layer.receive(self.channel_name))
            except Exception as exc:
                current.layer_failed(layer, exc)
                await current.layer_available()
                # A restarted layer has forgotten our groups.
                await self.join_groups()

    def own_groups(self) -> list[str]:
        """The groups this socket's channel belongs to."""
        return []

    async def join_groups(self) -> None:
        """Join `own_groups()`, best effort: after an outage, `channel_receive` joins again."""
        if self.channel_layer is None:
            return
        for group in self.own_groups():
            await hub().join(self.channel_layer, group, self.channel_name)

    async def leave_groups(self) -> None:
        if self.channel_layer is None:
            return
        for group in self.own_groups():
            await hub().leave(self.channel_layer, group, self.channel_name)

    def connect_query(self) -> dict[str, str]:
        query_string = self.scope.get("query_string", b"").decode("latin-1")
        return dict(parse_qsl(query_string, keep_blank_values=True))

    async def refuse(self, exc: ApiError) -> None:
        """Accept, say why, and close: browsers cannot read a rejected handshake."""
        await self.accept()
        await self.send_api_error(exc)
        await self.close(code=close_code(exc))

    async def accept(
        self, subprotocol: str | None = None, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """Accept, and count the socket as a live client that a shutdown closes with 1012."""
        await super().accept(subprotocol, headers)
        self._accepted = True
        current = hub()
        current.add_socket(self)
        if current.draining:
            await self.close(code=SERVICE_RESTART)

    async def disconnect(self, code: int) -> None:
        await self.stop_following()
        hub().discard_socket(self)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        if text_data is None:
            await self.send_error("invalid_message", "Messages are JSON text frames.")
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self.send_error("invalid_json", "The message is not valid JSON.")
            return
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self.send_error("invalid_message", "A message is an object with a 'type'.")
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        kind = content["type"]
        if kind == "ping":
            await self.send_json({"type": "pong", "data": content.get("data")})
        elif kind == "subscribe":
            params = {k: v for k, v in content.items() if k != "type" and v is not None}
            try:
                query = parse_query(params, waiting=False)
            except ApiError as exc:
                await self.send_api_error(exc)
                return
            await self.stop_following()
            await self.start_following(await self.start_cursor(query), acknowledge=True)
        elif kind == "unsubscribe":
            await self.stop_following()
            await self.send_json({"type": "unsubscribed", "data": {"session_id": self.session_id}})
        else:
            await self.send_error("unknown_type", f"Unknown message type: {kind[:64]!r}.")

    async def start_cursor(self, query: FeedQuery) -> FeedQuery | ApiError:
        """
        The query with its start cursor checked, or fixed at the session's
        last event if it had none; or the error to report instead.
        """
        assert self.session_id is not None
        try:
            return replace(query, after=await astart_cursor(self.session_id, query.after))
        except ApiError as exc:
            return exc

    async def start_following(self, start: FeedQuery | ApiError, acknowledge: bool = False) -> None:
        """Push events after `start.after` from now on, or report why not."""
        if isinstance(start, SessionNotFound):
            await self.send_api_error(start)
            await self.close(code=CLOSE_CODES[404])
        elif isinstance(start, ApiError):
            await self.send_api_error(start)
        else:
            if acknowledge:
                await self.send_json(
                    {
                        "type": "subscribed",
                        "data": {"session_id": self.session_id, "after": start.after},
                    }
                )
            self._follower = asyncio.create_task(self._push(start))

    async def stop_following(self) -> None:
        follower, self._follower = self._follower, None
        if follower is not None:
            await cancel_and_wait(follower)

    async def _push(self, query: FeedQuery) -> None:
        assert self.session_id is not None
        try:
            await push(self.session_id, query, self.send_page)
        except SessionNotFound as exc:
            await self.send_api_error(exc)
            await self.close(code=CLOSE_CODES[404])
        except ApiError as exc:
            # Retention overtook this subscriber; it resubscribes after relisting.
            await self.send_api_error(exc)
        except Exception:
            logger.exception("Artifact event push failed")
            await self.close(code=1011)

    async def send_page(self, page: Page) -> None:
        """
        Send a page's `artifact_created` message. Sockets woken together
        share the page and so its encoding. Called for many sockets in a row
        when a page is pushed to a session's subscribers (`feed.push`), so it
        goes straight to the ASGI server's send.
        """
        text = page.encoded("ws", partial(self.message, page))
        await self.base_send({"type": "websocket.send", "text": text})

    def message(self, page: Page) -> str:
        """The `artifact_created` message of a page, as JSON text."""
        return json.dumps(
            {
                "type": "artifact_created",
                "data": {
                    "session_id": self.session_id,
                    "events": page.events,
                    "next_cursor": page.next_cursor,
                },
            }
        )

    async def send_error(self, code: str, detail: str, **extra: Any) -> None:
        await self.send_json({"type": "error", "data": {"code": code, "detail": detail, **extra}})

    async def send_api_error(self, exc: ApiError) -> None:
        await self.send_json({"type": "error", "data": error_payload(exc)})


class SessionConsumer(ArtifactSocket):
    """
    The session's control socket, `/ws`. Connecting without `session_id`
    creates a session, and the `connection` message carries its `token`;
    `?session_id=` re-attaches to an existing one the caller may reach
    (`&token=`, a JWT, or the owner's cookie; see `attachments.access`). The
    first message is always `{"type": "connection", ...}`, or an `error`
    followed by a close; a session the caller may not reach is 4404, like one
    that does not exist. The session's artifact events are pushed here too
    (see `ArtifactSocket`).
    """

    groups_of_its_own = True

    def own_groups(self) -> list[str]:
        return [] if self.session_id is None else [session_group(self.session_id)]

    async def connect(self) -> None:
        params = self.connect_query()
        requested = params.get("session_id")
        try:
            query = parse_query(
                {k: v for k, v in params.items() if k not in _NOT_FEED_PARAMS}, waiting=False
            )
            credentials = await credentials_from_scope(self.scope)
            self.session_id, token = await self._attach(credentials, requested)
        except ApiError as exc:
            await self.refuse(exc)
            return
        # Fixed before `connection` is sent: the client sees everything after it.
        start = await self.start_cursor(query)
        await self.join_groups()
        await self.accept()
        data = {"session_id": self.session_id, "status": "connected"}
        if token is not None:
            data["token"] = token
        await self.send_json({"type": "connection", "data": data})
        await self.start_following(start)

    async def disconnect(self, code: int) -> None:
        await super().disconnect(code)
        await self.leave_groups()

    @database_sync_to_async
    def _attach(self, credentials: Credentials, requested: str | None) -> tuple[str, str | None]:
        """The session's id, and its token if it was created here."""
        if requested is not None:
            return session_for(credentials, requested).session_id, None
        session = create_session(owner=owner_for_new_session(credentials))
        return session.session_id, session.token

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        handler = _message_handlers.get(content["type"])
        if handler is None:
            await super().receive_json(content, **kwargs)
            return
        assert self.session_id is not None
        try:
            reply = await handler(self.session_id, content.get("data"))
        except ApiError as exc:
            await self.send_error(exc.code, str(exc.detail), **exc.extra)
            return
        await self.send_json(reply)

    async def workflow_message(self, event: dict[str, Any]) -> None:
        """Run status and node logs from the session's runs, forwarded as they are."""
        await self.send_json(event["message"])


class ArtifactsConsumer(ArtifactSocket):
    """
    A dashboard's subscription to one session's artifact events,
    `/ws/sessions/{session_id}/artifacts`. The first message is
    `{"type": "connection", ...}`, or an `error` followed by a close.
    """

    async def connect(self) -> None:
        requested = self.scope["url_route"]["kwargs"]["session_id"]
        try:
            params = self.connect_query()
            query = parse_query(
                {k: v for k, v in params.items() if k not in _NOT_FEED_PARAMS}, waiting=False
            )
            # Checked in a batch with the other sockets connecting now.
            self.session_id = (await authorize(self.scope, requested)).session_id
        except ApiError as exc:
            await self.refuse(exc)
            return
        start = await self.start_cursor(query)
        await self.accept()
        await self.send_json(
            {"type": "connection", "data": {"session_id": self.session_id, "status": "connected"}}
        )
        await self.start_following(start)
