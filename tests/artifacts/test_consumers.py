"""The session control socket, /ws."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator

from attachments.models import Session
from attachments.sessions import create_session, purge_session
from macproject.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(path: str = "/ws") -> tuple[WebsocketCommunicator, dict]:
    communicator = WebsocketCommunicator(application, path, headers=[(b"host", b"localhost")])
    connected, _ = await communicator.connect()
    assert connected
    return communicator, await communicator.receive_json_from()


async def test_connecting_creates_a_session_and_says_so_first():
    communicator, first = await connect()
    try:
        assert first["type"] == "connection"
        assert first["data"]["status"] == "connected"
        session_id = first["data"]["session_id"]
        assert await Session.objects.filter(session_id=session_id).aexists()
    finally:
        await communicator.disconnect()


async def test_reattaches_to_an_existing_session():
    from asgiref.sync import sync_to_async

    session = await sync_to_async(create_session)("existing")
    communicator, first = await connect(f"/ws?session_id={session.session_id}")
    try:
        assert first == {"type": "connection", "data": {"session_id": "existing", "status": "connected"}}
        assert await Session.objects.acount() == 1
    finally:
        await communicator.disconnect()


@pytest.mark.parametrize(
    ("query", "code", "close_code"),
    [("session_id=bad.id", "invalid_session_id", 4400), ("session_id=unknown", "session_not_found", 4404)],
)
async def test_bad_session_ids_get_an_error_then_a_close(query, code, close_code):
    communicator, first = await connect(f"/ws?{query}")
    assert first["type"] == "error"
    assert first["data"]["code"] == code
    assert await communicator.receive_output() == {"type": "websocket.close", "code": close_code}
    await communicator.disconnect()


async def test_purged_sessions_cannot_be_reattached():
    from asgiref.sync import sync_to_async

    session = await sync_to_async(create_session)("purged")
    await sync_to_async(purge_session)(session)
    communicator, first = await connect("/ws?session_id=purged")
    assert first["data"]["code"] == "session_not_found"
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [("not json", "invalid_json"), ("[1, 2]", "invalid_message"), ('{"type": "nope"}', "unknown_type")],
)
async def test_bad_messages_get_an_error_and_the_socket_stays_open(frame, code):
    communicator, _ = await connect()
    try:
        await communicator.send_to(text_data=frame)
        reply = await communicator.receive_json_from()
        assert reply["type"] == "error" and reply["data"]["code"] == code
        await communicator.send_json_to({"type": "ping", "data": 1})
        assert await communicator.receive_json_from() == {"type": "pong", "data": 1}
    finally:
        await communicator.disconnect()
