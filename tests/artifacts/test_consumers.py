"""The session control socket, /ws, and the dashboard's /ws/sessions/{id}/artifacts."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from attachments.models import Session
from attachments.sessions import create_session, purge_session

from .builders import Communicator, add_attachment, new_session, sequences, ws_connect

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(path: str = "/ws") -> tuple[Communicator, dict]:
    return await ws_connect(path)


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

    session = await sync_to_async(create_session)("existing")
    communicator, first = await connect(f"/ws?session_id={session.session_id}")
    try:
        assert first == {
            "type": "connection",
            "data": {"session_id": "existing", "status": "connected"},
        }
        assert await Session.objects.acount() == 1
    finally:
        await communicator.disconnect()


@pytest.mark.parametrize(
    ("query", "code", "close_code"),
    [
        ("session_id=bad.id", "invalid_session_id", 4400),
        ("session_id=unknown", "session_not_found", 4404),
    ],
)
async def test_bad_session_ids_get_an_error_then_a_close(query, code, close_code):
    communicator, first = await connect(f"/ws?{query}")
    assert first["type"] == "error"
    assert first["data"]["code"] == code
    assert await communicator.receive_output() == {"type": "websocket.close", "code": close_code}
    await communicator.disconnect()


async def test_purged_sessions_cannot_be_reattached():

    session = await sync_to_async(create_session)("purged")
    await sync_to_async(purge_session)(session)
    communicator, first = await connect("/ws?session_id=purged")
    assert first["data"]["code"] == "session_not_found"
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('{"type": "nope"}', "unknown_type"),
    ],
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


# Artifact events on both sockets.


async def add(session, *names: str, **fields) -> None:
    for name in names:
        await database_sync_to_async(add_attachment)(session, name, **fields)


async def receive_events(communicator: Communicator, count: int, timeout: float = 10) -> list[dict]:
    """Events from artifact_created messages until `count` have arrived."""
    events: list[dict] = []
    while len(events) < count:
        message = await communicator.receive_json_from(timeout)
        assert message["type"] == "artifact_created", message
        assert set(message["data"]) == {"session_id", "events", "next_cursor"}
        events.extend(message["data"]["events"])
    return events


async def test_the_control_socket_pushes_its_sessions_new_artifacts():
    session = await database_sync_to_async(new_session)("ctl")
    await add(session, "before.txt")
    communicator, first = await connect("/ws?session_id=ctl")
    try:
        assert first["type"] == "connection"
        await add(session, "after.txt")
        message = await communicator.receive_json_from(10)
        assert message["type"] == "artifact_created"
        assert message["data"]["session_id"] == "ctl"
        assert [e["name"] for e in message["data"]["events"]] == ["after.txt"]
        assert message["data"]["next_cursor"] == 2
        assert await communicator.receive_nothing(0.2)
    finally:
        await communicator.disconnect()


async def test_the_control_socket_sends_the_backlog_after_a_cursor():
    session = await database_sync_to_async(new_session)("ctl2")
    await add(session, "a", "b", "c")
    communicator, _ = await connect("/ws?session_id=ctl2&after=1")
    try:
        assert sequences(await receive_events(communicator, 2)) == [2, 3]
    finally:
        await communicator.disconnect()


async def test_a_new_session_socket_gets_its_first_artifacts():
    communicator, first = await connect("/ws")
    try:
        session = await Session.objects.aget(session_id=first["data"]["session_id"])
        await add(session, "first.png", mime="image/png")
        assert [e["name"] for e in await receive_events(communicator, 1)] == ["first.png"]
    finally:
        await communicator.disconnect()


async def test_bad_feed_parameters_refuse_the_control_socket_before_creating_a_session():
    communicator, first = await connect("/ws?after=soon")
    assert first["type"] == "error"
    assert (first["data"]["code"], first["data"]["parameter"]) == ("invalid_parameter", "after")
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4400}
    await communicator.disconnect()
    assert await Session.objects.acount() == 0


async def test_the_dashboard_socket_sends_backlog_then_live_events():
    session = await database_sync_to_async(new_session)("dash")
    await add(session, "a", "b")
    communicator, first = await connect("/ws/sessions/dash/artifacts?after=0")
    try:
        assert first == {
            "type": "connection",
            "data": {"session_id": "dash", "status": "connected"},
        }
        assert sequences(await receive_events(communicator, 2)) == [1, 2]
        await add(session, "c")
        events = await receive_events(communicator, 1)
        assert (sequences(events), events[0]["change_type"]) == ([3], "created")
    finally:
        await communicator.disconnect()


@pytest.mark.parametrize(
    ("path", "code", "close_code"),
    [
        ("/ws/sessions/nobody/artifacts", "session_not_found", 4404),
        ("/ws/sessions/bad.id/artifacts", "invalid_session_id", 4400),
        ("/ws/sessions/dash2/artifacts?limit=0", "invalid_parameter", 4400),
    ],
)
async def test_the_dashboard_socket_refuses_bad_sessions_and_parameters(path, code, close_code):
    await database_sync_to_async(new_session)("dash2")
    communicator, first = await connect(path)
    assert (first["type"], first["data"]["code"]) == ("error", code)
    assert await communicator.receive_output() == {"type": "websocket.close", "code": close_code}
    await communicator.disconnect()


async def test_a_subscribe_message_restarts_from_its_cursor_with_its_filters():
    session = await database_sync_to_async(new_session)("sub")
    await add(session, "a.txt", "b.png", "c.txt")
    communicator, _ = await connect("/ws/sessions/sub/artifacts")
    try:
        await communicator.send_json_to({"type": "subscribe", "after": 0, "include_ext": ["txt"]})
        assert await communicator.receive_json_from() == {
            "type": "subscribed",
            "data": {"session_id": "sub", "after": 0},
        }
        assert [e["name"] for e in await receive_events(communicator, 2)] == ["a.txt", "c.txt"]
        await add(session, "d.png", "e.txt")
        assert [e["name"] for e in await receive_events(communicator, 1)] == ["e.txt"]
    finally:
        await communicator.disconnect()


@pytest.mark.parametrize("path", ["/ws?session_id=cur", "/ws/sessions/cur/artifacts"])
async def test_cursor_errors_carry_the_cursor_to_resume_from_and_keep_the_socket(path):
    session = await database_sync_to_async(new_session)("cur")
    await add(session, "a", "b")
    communicator, _ = await connect(path)
    try:
        await communicator.send_json_to({"type": "subscribe", "after": 9})
        error = await communicator.receive_json_from()
        assert error["type"] == "error"
        assert (error["data"]["code"], error["data"]["resume_after"]) == ("cursor_ahead", 2)
        await communicator.send_json_to({"type": "subscribe", "after": "x"})
        error = await communicator.receive_json_from()
        assert (error["data"]["code"], error["data"]["parameter"]) == ("invalid_parameter", "after")
        await communicator.send_json_to({"type": "subscribe", "after": 1})
        assert (await communicator.receive_json_from())["type"] == "subscribed"
        assert sequences(await receive_events(communicator, 1)) == [2]
    finally:
        await communicator.disconnect()


async def test_an_expired_cursor_on_connect_is_an_error_message(settings):
    settings.ARTIFACTS_EVENT_RETENTION = 1
    session = await database_sync_to_async(new_session)("exp")
    await add(session, "a", "b", "c")
    communicator, _ = await connect("/ws/sessions/exp/artifacts?after=0")
    try:
        error = await communicator.receive_json_from()
        assert (error["data"]["code"], error["data"]["resume_after"]) == ("cursor_expired", 2)
    finally:
        await communicator.disconnect()


async def test_unsubscribe_stops_the_pushes():
    session = await database_sync_to_async(new_session)("unsub")
    communicator, _ = await connect("/ws/sessions/unsub/artifacts")
    try:
        await communicator.send_json_to({"type": "unsubscribe"})
        assert await communicator.receive_json_from() == {
            "type": "unsubscribed",
            "data": {"session_id": "unsub"},
        }
        await add(session, "quiet.txt")
        assert await communicator.receive_nothing(0.5)
    finally:
        await communicator.disconnect()


async def test_purging_the_session_closes_its_subscriptions(settings):
    settings.ARTIFACTS_RECHECK_SECONDS = 0.1
    session = await database_sync_to_async(new_session)("gone")
    communicator, _ = await connect("/ws/sessions/gone/artifacts")
    await database_sync_to_async(purge_session)(session)
    error = await communicator.receive_json_from(5)
    assert (error["type"], error["data"]["code"]) == ("error", "session_not_found")
    assert await communicator.receive_output(5) == {"type": "websocket.close", "code": 4404}
    await communicator.disconnect()


@pytest.mark.parametrize(
    "path", ["/ws?session_id=burst&after={}", "/ws/sessions/burst/artifacts?after={}"]
)
async def test_reconnecting_with_a_cursor_in_the_middle_of_a_burst_loses_and_repeats_nothing(path):
    session = await database_sync_to_async(new_session)("burst")
    total = 40

    async def burst():
        for i in range(total):
            await add(session, f"f{i}.txt")
            await asyncio.sleep(0.003)

    writer = asyncio.create_task(burst())
    communicator, _ = await connect(path.format(0))
    received = await receive_events(communicator, 10)
    await communicator.disconnect()
    communicator, _ = await connect(path.format(received[-1]["sequence"]))
    try:
        received += await receive_events(communicator, total - len(received), timeout=20)
        await writer
        assert await communicator.receive_nothing(0.3)
    finally:
        await communicator.disconnect()
    assert sequences(received) == list(range(1, total + 1))
