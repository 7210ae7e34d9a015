"""
GET /api/sessions/{id}/artifact-events, through both of its entry points:
the Django view (any deployment) and `EventFeedMiddleware` (the reference
ASGI application, where a waiting request holds no thread).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from artifacts.wakeups import hub
from attachments.sessions import purge_session

from .builders import add_attachment, asgi_client, new_session, sequences, until, waiting
from .sse_client import SSEClient

pytestmark = pytest.mark.django_db(transaction=True)

EVENTS = "/api/sessions/{}/artifact-events"


@pytest.fixture(params=["asgi", "django"])
def get(request):
    """GET a URL through one entry point: (status, JSON body, headers)."""

    async def via_asgi(url: str, **headers: str):
        async with asgi_client() as client:
            response = await client.get(url, headers=headers)
        return response.status_code, response.json(), response.headers

    async def via_django(url: str, **headers: str):
        response = await AsyncClient().get(url, headers=headers)
        return response.status_code, response.json(), response.headers

    return via_asgi if request.param == "asgi" else via_django


@pytest.fixture
def settings_for_waits(settings):
    # Long enough that only a notification can wake a waiter within the test.
    settings.ARTIFACTS_RECHECK_SECONDS = 30
    return settings


async def create(session_id: str, *names: str):
    session = await database_sync_to_async(new_session)(session_id)
    for name in names:
        await database_sync_to_async(add_attachment)(session, name)
    return session


async def test_a_page_of_events(get):
    await create("p1", "a.txt", "b.png")
    status, body, headers = await get(EVENTS.format("p1") + "?after=1")
    assert status == 200
    assert set(body) == {"events", "next_cursor", "has_more", "timed_out"}
    assert [e["name"] for e in body["events"]] == ["b.png"]
    assert (body["next_cursor"], body["has_more"], body["timed_out"]) == (2, False, False)
    assert headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("after=x", "after"),
        ("wait_seconds=120", "wait_seconds"),
        ("limit=0", "limit"),
        ("max_size=big", "max_size"),
        ("include_mime=image", "include_mime"),
        ("include_ext=a%20b", "include_ext"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(get, query, parameter):
    await create("p2")
    status, body, _ = await get(EVENTS.format("p2") + "?" + query)
    assert status == 400
    assert body["code"] == "invalid_parameter"
    assert body["parameter"] == parameter
    assert parameter in body["detail"]


@pytest.mark.parametrize(
    ("session_id", "status", "code"),
    [("bad.id", 400, "invalid_session_id"), ("nobody", 404, "session_not_found")],
)
async def test_unknown_sessions(get, session_id, status, code):
    got_status, body, _ = await get(EVENTS.format(session_id))
    assert (got_status, body["code"]) == (status, code)


async def test_a_cursor_ahead_is_410_with_the_cursor_to_resume_from(get):
    await create("p3", "a.txt")
    status, body, _ = await get(EVENTS.format("p3") + "?after=5&wait_seconds=10")
    assert status == 410
    assert (body["code"], body["resume_after"], body["last_sequence"]) == ("cursor_ahead", 1, 1)
    assert body["detail"]


async def test_an_expired_cursor_is_410_with_the_oldest_cursor_kept(get, settings):
    settings.ARTIFACTS_EVENT_RETENTION = 2
    await create("p4", "a", "b", "c", "d")
    status, body, _ = await get(EVENTS.format("p4") + "?after=1")
    assert status == 410
    assert (body["code"], body["resume_after"]) == ("cursor_expired", 2)
    status, body, _ = await get(EVENTS.format("p4") + f"?after={body['resume_after']}")
    assert sequences(body["events"]) == [3, 4]


async def test_a_waiting_poll_returns_when_an_event_commits(get, settings_for_waits):
    session = await create("w1", "old.txt")
    request = asyncio.create_task(get(EVENTS.format("w1") + "?after=1&wait_seconds=20"))
    await until(lambda: waiting("w1"))
    await database_sync_to_async(add_attachment)(session, "new.txt")
    status, body, _ = await request
    assert status == 200
    assert [e["name"] for e in body["events"]] == ["new.txt"]
    # Woken by the notification: no re-check comes before the deadline.
    assert (body["next_cursor"], body["timed_out"]) == (2, False)


async def test_a_waiting_poll_skips_events_its_filters_drop(get, settings_for_waits):
    session = await create("w2")
    request = asyncio.create_task(
        get(EVENTS.format("w2") + "?after=0&wait_seconds=20&include_mime=image/")
    )
    await until(lambda: waiting("w2"))
    await database_sync_to_async(add_attachment)(session, "skip.txt")
    # Woken by the first event, which the filter drops, it waits again.
    await until(lambda: waiting("w2") and hub().watches["w2"].head == 1)
    await database_sync_to_async(add_attachment)(session, "want.png", mime="image/png")
    status, body, _ = await request
    assert [e["name"] for e in body["events"]] == ["want.png"]
    assert body["next_cursor"] == 2


async def test_a_poll_with_nothing_new_times_out_at_its_deadline(get):
    await create("w3", "a.txt")
    started = time.monotonic()
    status, body, _ = await get(EVENTS.format("w3") + "?after=1&wait_seconds=0.4")
    elapsed = time.monotonic() - started
    assert status == 200
    assert body == {"events": [], "next_cursor": 1, "has_more": False, "timed_out": True}
    assert 0.4 <= elapsed < 5


async def test_a_timed_out_poll_carries_the_same_headers_as_an_immediate_page():
    # Through the ASGI path the timed-out answer is sent from the deadline's
    # callback, with the headers the middleware set when the request arrived.
    await create("w4", "a.txt")
    async with asgi_client() as client:
        immediate = await client.get(EVENTS.format("w4") + "?after=0")
        timed_out = await client.get(EVENTS.format("w4") + "?after=1&wait_seconds=0.2")
    assert timed_out.json()["timed_out"] is True
    assert int(timed_out.headers["content-length"]) == len(timed_out.content)
    for name in ("content-type", "cache-control", "x-content-type-options"):
        assert timed_out.headers[name] == immediate.headers[name]


async def test_without_wait_seconds_an_empty_page_returns_at_once(get):
    await create("w4")
    status, body, _ = await get(EVENTS.format("w4"))
    assert body == {"events": [], "next_cursor": 0, "has_more": False, "timed_out": False}


async def test_purging_the_session_ends_a_wait_with_404(get, settings):
    settings.ARTIFACTS_RECHECK_SECONDS = 0.1
    session = await create("w5")
    request = asyncio.create_task(get(EVENTS.format("w5") + "?wait_seconds=20"))
    await until(lambda: waiting("w5"))
    await database_sync_to_async(purge_session)(session)
    status, body, _ = await request
    assert (status, body["code"]) == (404, "session_not_found")


async def test_a_waiting_poll_whose_client_leaves_lets_go_of_the_session(settings):
    """On the ASGI fast path, a disconnect ends the wait at once, not at its deadline."""
    settings.ARTIFACTS_RECHECK_SECONDS = 30
    await create("gone")
    client = SSEClient(EVENTS.format("gone") + "?after=0&wait_seconds=60")
    await client.communicator.send_input({"type": "http.request", "body": b""})
    await until(lambda: waiting("gone"))
    await client.close()
    await until(lambda: "gone" not in hub().watches)


async def test_waiting_polls_hold_no_thread(settings):
    """Through the reference ASGI app, N waiting requests do not mean N threads."""
    settings.ARTIFACTS_RECHECK_SECONDS = 30
    session = await create("idle")
    waiters = 60
    before = threading.active_count()
    async with asgi_client() as client:
        polls = [
            asyncio.create_task(client.get(EVENTS.format("idle") + "?wait_seconds=20"))
            for _ in range(waiters)
        ]
        await until(lambda: waiting("idle", waiters))
        during = threading.active_count()
        await database_sync_to_async(add_attachment)(session, "wake.txt")
        responses = await asyncio.wait_for(asyncio.gather(*polls), 15)
    assert [sequences(r.json()["events"]) for r in responses] == [[1]] * waiters
    # Only the event loop's bounded pool of short database reads, at most.
    assert during - before < waiters // 2


async def test_other_methods_are_405_in_json():
    await create("m1")
    response = await AsyncClient().post(EVENTS.format("m1"))
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    async with asgi_client() as client:
        response = await client.post(EVENTS.format("m1"))
    assert (response.status_code, response.json()["code"]) == (405, "method_not_allowed")


async def test_session_detail_carries_the_last_event_cursor():
    await create("d1", "a", "b")
    async with asgi_client() as client:
        body = (await client.get("/api/sessions/d1")).json()
        assert body["last_event_cursor"] == 2
        created = (await client.post("/api/sessions", json={})).json()
    assert created["last_event_cursor"] == 0
