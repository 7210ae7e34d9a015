from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.apps import apps

from attachments.access import (
    Credentials,
    credentials_from_scope,
    owner_for_new_session,
    session_for,
)
from attachments.exceptions import ApiError
from attachments.sessions import create_session, get_live_session

from .groups import session_group

# Close codes in the 4000-4999 range reserved for applications, echoing HTTP.
CLOSE_CODES = {400: 4400, 401: 4401, 403: 4403, 404: 4404, 409: 4409}


class SessionConsumer(AsyncJsonWebsocketConsumer):
    """
    The session's control socket, `/ws`. Connecting without `session_id`
    creates a session, and the `connection` message carries its `token`;
    `?session_id=` re-attaches to an existing one the caller may reach
    (`&token=`, a JWT, or the owner's cookie; see `attachments.access`). The
    first message is always `{"type": "connection", ...}`, or an `error`
    followed by a close; a session the caller may not reach is 4404, like
    one that does not exist.
    """

    session_id: str | None = None

    async def connect(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        requested = query.get("session_id", [None])[0]
        try:
            credentials = await credentials_from_scope(self.scope)
            self.session_id, token = await self._attach(credentials, requested)
        except ApiError as exc:
            await self.accept()
            await self.send_error(exc.code, str(exc.detail))
            await self.close(code=CLOSE_CODES.get(exc.status_code, 4400))
            return
        await self.channel_layer.group_add(session_group(self.session_id), self.channel_name)
        await self.accept()
        data = {"session_id": self.session_id, "status": "connected"}
        if token is not None:
            data["token"] = token
        await self.send_json({"type": "connection", "data": data})

    async def disconnect(self, code: int) -> None:
        if self.session_id is not None:
            await self.channel_layer.group_discard(session_group(self.session_id), self.channel_name)

    @database_sync_to_async
    def _attach(self, credentials: Credentials, requested: str | None) -> tuple[str, str | None]:
        """The session's id, and its token if it was created here."""
        if requested is not None:
            return session_for(credentials, requested).session_id, None
        session = create_session(owner=owner_for_new_session(credentials))
        return session.session_id, session.token

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
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
        if content["type"] == "ping":
            await self.send_json({"type": "pong", "data": content.get("data")})
            return
        if content["type"] == "human_input" and apps.is_installed("workflows"):
            await self.receive_human_input(content.get("data"))
            return
        await self.send_error("unknown_type", f"Unknown message type: {content['type'][:64]!r}.")

    async def send_error(self, code: str, detail: str, **extra: Any) -> None:
        await self.send_json({"type": "error", "data": {"code": code, "detail": detail, **extra}})

    async def receive_human_input(self, data: Any) -> None:
        """`human_input`: `{"input", "attachments"?, "run_id"?}` for the node that waits."""
        from workflows.control import wake_run_async

        if not isinstance(data, dict):
            await self.send_error("invalid", "'data' must be an object with 'input'.")
            return
        try:
            run_id, node_id, value = await self._submit_input(data)
        except ApiError as exc:
            await self.send_error(exc.code, str(exc.detail), **exc.extra)
            return
        await wake_run_async(run_id, "input")
        await self.send_json(
            {"type": "input_received", "data": {"run_id": run_id, "node_id": node_id, **value}}
        )

    @database_sync_to_async
    def _submit_input(self, data: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        from workflows.records import submit_human_input

        assert self.session_id is not None
        run, node, value = submit_human_input(
            get_live_session(self.session_id),
            data.get("input"),
            data.get("attachments"),
            run_id=data.get("run_id"),
        )
        return run.run_id, node.node_id, value

    async def workflow_message(self, event: dict[str, Any]) -> None:
        """Run status and node logs from the session's runs, forwarded as they are."""
        await self.send_json(event["message"])
