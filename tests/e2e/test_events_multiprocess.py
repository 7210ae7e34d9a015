"""
Several server processes sharing PostgreSQL and Redis, as in production:
writers on two workers at once, a long-poller and a WebSocket subscriber on
a third, who must each see every event exactly once, in order, within 1 s.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from . import event_clients as clients

pytestmark = [pytest.mark.server, pytest.mark.services, pytest.mark.django_db(transaction=True)]

PER_WRITER = 20
# Longer than Redis's 5 s blocking reads: an idle subscriber must survive them.
IDLE_SECONDS = 6


def test_writers_on_two_workers_readers_on_a_third_see_every_event_once_in_order_within_1s(server):
    async def write(base_url: str, session_id: str, prefix: str) -> dict[str, float]:
        uploaded: dict[str, float] = {}
        limits = httpx.Limits(max_connections=4)
        async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
            results = await asyncio.gather(
                *(
                    clients.upload(
                        client, session_id, f"{prefix}-{i:02d}.bin", b"%s%d" % (prefix.encode(), i)
                    )
                    for i in range(PER_WRITER)
                )
            )
        uploaded.update(results)
        return uploaded

    async def scenario(writers: list[str], reader, session_id: str):
        total = PER_WRITER * len(writers)
        polled, pushed = clients.Received(), clients.Received()
        connected = asyncio.Event()
        poller = asyncio.create_task(clients.long_poll(reader.url, session_id, total, polled))
        subscriber = asyncio.create_task(
            clients.websocket(
                f"{reader.ws_url}/ws/sessions/{session_id}/artifacts?after=0",
                total,
                pushed,
                connected,
            )
        )
        await asyncio.wait_for(connected.wait(), 10)
        await asyncio.sleep(IDLE_SECONDS)
        uploads = await asyncio.gather(
            *(write(url, session_id, f"w{n}") for n, url in enumerate(writers))
        )
        await asyncio.wait_for(asyncio.gather(poller, subscriber), 10)
        uploaded = {k: v for part in uploads for k, v in part.items()}
        return uploaded, polled, pushed

    with server() as first, server() as second, server() as third:
        assert len({first.process.pid, second.process.pid, third.process.pid}) == 3
        session_id = clients.create_session(first.url)
        uploaded, polled, pushed = asyncio.run(scenario([first.url, second.url], third, session_id))

    total = PER_WRITER * 2
    assert len(uploaded) == total
    for name, received in (("long-poll", polled), ("websocket", pushed)):
        assert received.sequences == list(range(1, total + 1)), name
        assert sorted(e["attachment_id"] for e in received.events) == sorted(uploaded), name
        late = {
            event["sequence"]: round(arrived - uploaded[event["attachment_id"]], 3)
            for event, arrived in zip(received.events, received.times, strict=True)
            if arrived - uploaded[event["attachment_id"]] >= 1.0
        }
        assert late == {}, f"{name}: events that arrived 1 s or more after their upload: {late}"
