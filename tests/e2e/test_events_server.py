"""The artifact event feed against real server processes: Uvicorn (the default) and Daphne."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.servers import SERVER_KINDS

from . import event_clients as clients

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]


@pytest.fixture(params=SERVER_KINDS)
def kind(request) -> str:
    return request.param


def test_a_long_poll_returns_when_an_upload_commits(server, kind):
    async def scenario(base_url: str, session_id: str) -> dict:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            poll = asyncio.create_task(
                client.get(
                    f"/api/sessions/{session_id}/artifact-events",
                    params={"after": 0, "wait_seconds": 20},
                )
            )
            # Most likely waiting by then; if not, its first read finds the event.
            await asyncio.sleep(0.5)
            attachment_id, _ = await clients.upload(client, session_id, "a.csv", b"x,y\n1,2\n")
            response = await poll
        body = response.json()
        assert [e["attachment_id"] for e in body["events"]] == [attachment_id]
        return body

    with server(kind, MAC_EVENT_RECHECK_SECONDS="30") as s:
        session_id = clients.create_session(s.url)
        body = asyncio.run(scenario(s.url, session_id))
    event = body["events"][0]
    assert (event["change_type"], event["sequence"], event["name"]) == ("created", 1, "a.csv")
    assert event["path"].startswith("code_workspace/attachments/")
    # Answered before its 20 s deadline, with the re-check 30 s away: woken by the notification.
    assert (body["next_cursor"], body["timed_out"]) == (1, False)


def test_waiting_long_polls_hold_no_thread(server):
    waiters = 200

    def threads(pid: int) -> int:
        with open(f"/proc/{pid}/status") as status:
            return int(next(line for line in status if line.startswith("Threads:")).split()[1])

    async def scenario(
        base_url: str, session_id: str, pid: int
    ) -> tuple[int, list[httpx.Response]]:
        limits = httpx.Limits(max_connections=waiters + 10)
        async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
            polls = [
                asyncio.create_task(
                    client.get(
                        f"/api/sessions/{session_id}/artifact-events",
                        params={"after": 0, "wait_seconds": 2},
                    )
                )
                for _ in range(waiters)
            ]
            await asyncio.sleep(1.2)
            during = threads(pid)
            return during, await asyncio.gather(*polls)

    with server("uvicorn") as s:
        session_id = clients.create_session(s.url)
        during, responses = asyncio.run(scenario(s.url, session_id, s.process.pid))
    assert [r.status_code for r in responses] == [200] * waiters
    assert all(r.json()["timed_out"] and r.json()["events"] == [] for r in responses)
    assert during < 40, f"{during} threads for {waiters} waiting requests"


def burst(base_url: str, session_id: str, total: int) -> asyncio.Task:
    async def run() -> list[str]:
        ids = []
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            for i in range(total):
                attachment_id, _ = await clients.upload(
                    client, session_id, f"f{i:02d}.txt", b"%d" % i
                )
                ids.append(attachment_id)
        return ids

    return asyncio.create_task(run())


def test_an_event_stream_resumed_mid_burst_with_last_event_id_misses_and_repeats_nothing(
    server, kind
):
    total = 30

    async def scenario(base_url: str, session_id: str) -> tuple[clients.Received, list[str]]:
        received = clients.Received()
        writer = burst(base_url, session_id, total)
        last_id = await clients.sse(base_url, session_id, 8, received)
        assert len(received.events) < total, "the reconnect must happen mid-burst"
        await clients.sse(base_url, session_id, total - len(received.events), received, last_id)
        return received, await writer

    with server(kind) as s:
        session_id = clients.create_session(s.url)
        received, ids = asyncio.run(asyncio.wait_for(scenario(s.url, session_id), 60))
    assert received.sequences == list(range(1, total + 1))
    assert [e["attachment_id"] for e in received.events] == ids


def test_a_websocket_resumed_mid_burst_with_a_cursor_misses_and_repeats_nothing(server, kind):
    total = 30

    async def scenario(
        ws_url: str, base_url: str, session_id: str
    ) -> tuple[clients.Received, list[str]]:
        received = clients.Received()
        path = f"{ws_url}/ws/sessions/{session_id}/artifacts?after="
        writer = burst(base_url, session_id, total)
        await clients.websocket_until(path + "0", 8, received)
        assert len(received.events) < total, "the reconnect must happen mid-burst"
        await clients.websocket(path + str(received.sequences[-1]), total, received)
        return received, await writer

    with server(kind) as s:
        session_id = clients.create_session(s.url)
        received, ids = asyncio.run(asyncio.wait_for(scenario(s.ws_url, s.url, session_id), 60))
    assert received.sequences == list(range(1, total + 1))
    assert [e["attachment_id"] for e in received.events] == ids
