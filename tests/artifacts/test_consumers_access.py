"""The access policy on the session control socket, /ws."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model

from attachments.models import Session
from attachments.sessions import create_session
from macproject.asgi import application
from tests.attachments.builders import JWT_SECRET, make_jwt

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.access_policy("token")]

REFUSED = {"type": "error", "data": {"code": "session_not_found", "detail": "No such session."}}


async def first_message(
    path: str, headers: list | None = None
) -> tuple[WebsocketCommunicator, dict]:
    communicator = WebsocketCommunicator(
        application, path, headers=[(b"host", b"localhost"), *(headers or [])]
    )
    connected, _ = await communicator.connect()
    assert connected
    return communicator, await communicator.receive_json_from()


async def assert_refused(path: str, headers: list | None = None) -> None:
    communicator, first = await first_message(path, headers)
    assert first == REFUSED
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4404}
    await communicator.disconnect()


async def assert_attached(path: str, session_id: str, headers: list | None = None) -> None:
    communicator, first = await first_message(path, headers)
    try:
        assert first == {
            "type": "connection",
            "data": {"session_id": session_id, "status": "connected"},
        }
    finally:
        await communicator.disconnect()


async def test_a_new_session_gets_its_token_in_the_connection_message():
    communicator, first = await first_message("/ws")
    await communicator.disconnect()
    data = first["data"]
    assert first["type"] == "connection" and len(data["token"]) >= 43
    await assert_attached(
        f"/ws?session_id={data['session_id']}&token={data['token']}", data["session_id"]
    )


async def test_reattaching_with_the_token():
    session = await sync_to_async(create_session)()
    await assert_attached(
        f"/ws?session_id={session.session_id}&token={session.token}", session.session_id
    )
    await assert_attached(
        f"/ws?session_id={session.session_id}",
        session.session_id,
        headers=[(b"authorization", f"Bearer {session.token}".encode())],
    )


async def test_reattaching_with_a_jwt(settings):
    settings.ATTACHMENTS_JWT_SECRET = JWT_SECRET
    session = await sync_to_async(create_session)()
    token = make_jwt(sessions=[session.session_id])
    await assert_attached(f"/ws?session_id={session.session_id}&token={token}", session.session_id)


async def test_without_the_token_it_is_the_same_as_an_unknown_session():
    session = await sync_to_async(create_session)()
    other = await sync_to_async(create_session)()
    await assert_refused("/ws?session_id=unknown")
    await assert_refused(f"/ws?session_id={session.session_id}")
    await assert_refused(f"/ws?session_id={session.session_id}&token=wrong")
    await assert_refused(f"/ws?session_id={session.session_id}&token={other.token}")


def _login(client, username: str, **fields) -> tuple:
    user = get_user_model().objects.create_user(username, **fields)
    client.force_login(user)
    return user, f"sessionid={client.cookies['sessionid'].value}".encode()


async def test_the_owners_cookie_from_this_origin(client):
    owner, cookie = await sync_to_async(_login)(client, "owner")
    session = await sync_to_async(create_session)(owner=owner)
    same_origin = [(b"cookie", cookie), (b"origin", b"http://localhost")]
    await assert_attached(f"/ws?session_id={session.session_id}", session.session_id, same_origin)
    # Browsers send cookies on cross-site handshakes: another origin's page gets nothing.
    cross_site = [(b"cookie", cookie), (b"origin", b"http://evil.example")]
    await assert_refused(f"/ws?session_id={session.session_id}", cross_site)


async def test_a_signed_in_user_owns_the_session_the_socket_creates(client):
    owner, cookie = await sync_to_async(_login)(client, "owner")
    communicator, first = await first_message("/ws", [(b"cookie", cookie)])
    await communicator.disconnect()
    session = await Session.objects.select_related("owner").aget(
        session_id=first["data"]["session_id"]
    )
    assert session.owner == owner


async def test_another_users_cookie_is_refused(client):
    _, cookie = await sync_to_async(_login)(client, "intruder")
    owner = await sync_to_async(get_user_model().objects.create_user)("owner")
    session = await sync_to_async(create_session)(owner=owner)
    await assert_refused(f"/ws?session_id={session.session_id}", [(b"cookie", cookie)])


async def test_staff_reach_every_session(client):
    _, cookie = await sync_to_async(_login)(client, "admin", is_staff=True)
    session = await sync_to_async(create_session)()
    await assert_attached(
        f"/ws?session_id={session.session_id}", session.session_id, [(b"cookie", cookie)]
    )


@pytest.mark.access_policy("open")
async def test_the_open_policy_needs_the_id_alone():
    session = await sync_to_async(create_session)()
    await assert_attached(f"/ws?session_id={session.session_id}", session.session_id)


class TestArtifactsSubscription:
    """/ws/sessions/{id}/artifacts follows the same rule as every other way in."""

    async def test_with_the_token(self):
        session = await sync_to_async(create_session)()
        path = f"/ws/sessions/{session.session_id}/artifacts"
        await assert_attached(f"{path}?token={session.token}", session.session_id)
        await assert_attached(
            path,
            session.session_id,
            headers=[(b"authorization", f"Bearer {session.token}".encode())],
        )

    async def test_without_or_with_another_sessions_token_it_is_refused_as_unknown(self):
        session = await sync_to_async(create_session)()
        other = await sync_to_async(create_session)()
        path = f"/ws/sessions/{session.session_id}/artifacts"
        await assert_refused(path)
        await assert_refused(f"{path}?token={other.token}")
        await assert_refused(f"/ws/sessions/no-such-session/artifacts?token={session.token}")
