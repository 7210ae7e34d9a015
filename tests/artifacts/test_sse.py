"""GET /api/sessions/{id}/artifact-events/stream: Server-Sent Events over the same cursor."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from artifacts.wakeups import hub
from attachments.sessions import purge_session

from .builders import add_attachment, new_session, sequences, until
from .sse_client import SSEClient, events_of, parse_blocks

pytestmark = pytest.mark.django_db(transaction=True)

STREAM = "/api/sessions/{}/artifact-events/stream"


async def create(session_id: str, *names: str):
    session = await database_sync_to_async(new_session)(session_id)
    for name in names:
        await database_sync_to_async(add_attachment)(session, name)
    return session


def ids(messages) -> list[str]:
    return [m.id for m in messages if m.id is not None]


async def test_backlog_then_live_events_with_their_sequence_as_id():
    session = await create("s1", "a.txt", "b.txt")
    client = SSEClient(STREAM.format("s1") + "?after=0")
    try:
        assert await client.start() == 200
        assert client.headers["content-type"].startswith("text/event-stream")
        assert client.headers["cache-control"] == "no-cache"
        messages = await client.messages(lambda m: len(events_of(m)) == 2)
        assert ids(messages) == ["1", "2"]
        assert [e["name"] for e in events_of(messages)] == ["a.txt", "b.txt"]
        await database_sync_to_async(add_attachment)(session, "c.txt")
        messages = await client.messages(lambda m: len(events_of(m)) == 3)
        assert ids(messages) == ["1", "2", "3"]
        assert events_of(messages)[2]["change_type"] == "created"
    finally:
        await client.close()


async def test_without_a_cursor_only_new_events_arrive():
    session = await create("s2", "old.txt")
    client = SSEClient(STREAM.format("s2"))
    try:
        await client.start()
        await client.messages(lambda m: len(m) >= 1)
        await database_sync_to_async(add_attachment)(session, "new.txt")
        messages = await client.messages(lambda m: len(events_of(m)) == 1)
        assert [e["name"] for e in events_of(messages)] == ["new.txt"]
    finally:
        await client.close()


async def test_last_event_id_resumes_and_wins_over_after():
    await create("s3", "a", "b", "c")
    client = SSEClient(STREAM.format("s3") + "?after=0", last_event_id="2")
    try:
        await client.start()
        messages = await client.messages(lambda m: len(events_of(m)) >= 1)
        assert sequences(events_of(messages)) == [3]
    finally:
        await client.close()


async def test_filtered_out_events_still_move_the_resume_point():
    await create("s4", "a.txt", "b.png", "c.txt")
    client = SSEClient(STREAM.format("s4") + "?after=0&include_ext=png")
    try:
        await client.start()
        messages = await client.messages(lambda m: "3" in ids(m))
        assert [e["name"] for e in events_of(messages)] == ["b.png"]
        # An id-only block: EventSource records it as the last event id
        # without firing a message.
        assert [(m.id, m.data) for m in messages if m.id] == [("2", messages[1].data), ("3", None)]
    finally:
        await client.close()


async def test_a_quiet_stream_sends_keep_alive_comments(settings):
    settings.ARTIFACTS_SSE_KEEPALIVE_SECONDS = 0.2
    await create("s5")
    client = SSEClient(STREAM.format("s5"))
    try:
        await client.start()
        messages = await client.messages(
            lambda m: any("keep-alive" in c for x in m for c in x.comments)
        )
        assert any("keep-alive" in c for m in messages for c in m.comments)
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("session_id", "query", "headers", "status", "code", "extra"),
    [
        ("s6", "?after=9", {}, 410, "cursor_ahead", {"resume_after": 1}),
        (
            "s6",
            "",
            {"last_event_id": "abc"},
            400,
            "invalid_parameter",
            {"parameter": "Last-Event-ID"},
        ),
        ("s6", "?limit=0", {}, 400, "invalid_parameter", {"parameter": "limit"}),
        ("nobody", "", {}, 404, "session_not_found", {}),
    ],
)
async def test_errors_are_json_before_any_event(session_id, query, headers, status, code, extra):
    await create("s6", "a")
    client = SSEClient(STREAM.format(session_id) + query, **headers)
    assert await client.start() == status
    assert client.headers["content-type"] == "application/json"
    body = json.loads(await client.body())
    assert body["code"] == code
    assert extra.items() <= body.items()
    await client.communicator.wait(5)


async def test_an_expired_cursor_is_410_with_the_oldest_cursor_kept(settings):
    settings.ARTIFACTS_EVENT_RETENTION = 1
    await create("s7", "a", "b", "c")
    client = SSEClient(STREAM.format("s7"), last_event_id="1")
    assert await client.start() == 410
    body = json.loads(await client.body())
    assert (body["code"], body["resume_after"]) == ("cursor_expired", 2)


async def test_purging_the_session_ends_the_stream_with_an_error_event(settings):
    settings.ARTIFACTS_RECHECK_SECONDS = 0.1
    session = await create("s8")
    client = SSEClient(STREAM.format("s8"))
    await client.start()
    await client.messages(lambda m: len(m) >= 1)
    await database_sync_to_async(purge_session)(session)
    messages = await client.messages(lambda m: any(x.event == "error" for x in m))
    error = next(m for m in messages if m.event == "error")
    assert error.json["code"] == "session_not_found"
    await client.messages(lambda m: False, timeout=5)
    assert client.ended
    await client.communicator.wait(5)


async def test_a_client_that_leaves_releases_its_subscription():
    await create("s9")
    client = SSEClient(STREAM.format("s9"))
    await client.start()
    await client.messages(lambda m: len(m) >= 1)
    assert "s9" in hub().watches
    await client.close()
    await until(lambda: "s9" not in hub().watches)


async def test_reconnecting_with_last_event_id_in_the_middle_of_a_burst_loses_and_repeats_nothing():
    session = await create("burst")
    total = 40

    async def burst():
        for i in range(total):
            await database_sync_to_async(add_attachment)(session, f"f{i}.txt")
            await asyncio.sleep(0.005)

    writer = asyncio.create_task(burst())
    received: list[int] = []
    client = SSEClient(STREAM.format("burst") + "?after=0")
    await client.start()
    first = await client.messages(lambda m: len(events_of(m)) >= 10)
    await client.close()
    received.extend(sequences(events_of(first)))
    resume = ids(first)[-1]
    client = SSEClient(STREAM.format("burst"), last_event_id=resume)
    try:
        await client.start()
        rest = await client.messages(
            lambda m: len(received) + len(events_of(m)) >= total, timeout=30
        )
        received.extend(sequences(events_of(rest)))
    finally:
        await client.close()
        await writer
    assert received == list(range(1, total + 1))


async def test_the_django_view_serves_the_same_stream():
    session = await create("dj", "a.txt")
    response = await AsyncClient().get(STREAM.format("dj") + "?after=0")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    chunks = aiter(response.streaming_content)
    text = ""
    try:
        while "id: 1" not in text:
            text += (await asyncio.wait_for(anext(chunks), 5)).decode()
        await database_sync_to_async(add_attachment)(session, "b.txt")
        while "id: 2" not in text:
            text += (await asyncio.wait_for(anext(chunks), 5)).decode()
    finally:
        await chunks.aclose()
    assert [m.json["name"] for m in parse_blocks(text) if m.data] == ["a.txt", "b.txt"]
    error = await AsyncClient().get(STREAM.format("dj") + "?after=7")
    assert (error.status_code, error.json()["code"]) == (410, "cursor_ahead")
