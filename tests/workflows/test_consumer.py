"""`human_input` on the /ws control socket when nothing waits, or the message is malformed."""

from __future__ import annotations

import pytest

from .helpers import Listener

pytestmark = pytest.mark.django_db(transaction=True)


async def connect_new() -> Listener:
    from asgiref.sync import sync_to_async

    from attachments.sessions import create_session

    session = await sync_to_async(create_session)()
    return Listener(session.session_id)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"input": "hello"}, "not_waiting_for_input"),
        ({"input": ""}, "invalid"),
        ({"input": "x", "attachments": "att_x"}, "invalid"),
        ({"input": "x", "attachments": ["att_unknown000000"]}, "unknown_attachments"),
        ("text", "invalid"),
    ],
)
async def test_human_input_errors(data, code):
    async with await connect_new() as ws:
        await ws.send({"type": "human_input", "data": data})
        reply = await ws.wait_for("error")
        assert reply["data"]["code"] == code
        await ws.send({"type": "ping"})
        await ws.wait_for("pong")
