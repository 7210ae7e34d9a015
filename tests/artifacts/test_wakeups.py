"""
The per-process wake-up hub: notifications wake waiters; a lost
notification is found by the re-check, and nothing is lost. Each test waits
for the state it needs (waiters waiting, watches gone), never for a time.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from artifacts.feed import FeedQuery, follow, poll
from artifacts.groups import events_group
from artifacts.wakeups import hub

from .builders import (
    DROPPING_LAYER,
    DroppingChannelLayer,
    add_attachment,
    new_session,
    sequences,
    until,
    waiting,
)

pytestmark = pytest.mark.django_db(transaction=True)


async def add(session, *names: str) -> None:
    for name in names:
        await database_sync_to_async(add_attachment)(session, name)


async def test_a_lost_notification_is_found_by_the_recheck(settings):
    settings.CHANNEL_LAYERS = DROPPING_LAYER
    settings.ARTIFACTS_RECHECK_SECONDS = 0.3
    session = await database_sync_to_async(new_session)("lossy")
    dropped_before = DroppingChannelLayer.dropped
    waiter = asyncio.create_task(poll("lossy", FeedQuery(after=0, wait_seconds=20)))
    await until(lambda: waiting("lossy"))
    await add(session, "a.txt")
    page = await waiter
    assert DroppingChannelLayer.dropped > dropped_before, "the notification was lost"
    assert sequences(page.events) == [1]
    # Woken by a re-check: at its 20 s deadline it would have timed out.
    assert not page.timed_out


async def test_a_stream_loses_nothing_when_every_notification_is_lost(settings):
    settings.CHANNEL_LAYERS = DROPPING_LAYER
    settings.ARTIFACTS_RECHECK_SECONDS = 0.1
    session = await database_sync_to_async(new_session)("lossy-stream")
    received: list[int] = []

    async def subscriber():
        async with aclosing(follow("lossy-stream", FeedQuery(after=0, limit=3))) as pages:
            async for page in pages:
                received.extend(sequences(page.events))
                if len(received) >= 20:
                    return

    task = asyncio.create_task(subscriber())
    for burst in range(4):
        await add(session, *(f"{burst}-{i}" for i in range(5)))
        # The next burst lands while the subscriber waits, not while it reads.
        await until(lambda: waiting("lossy-stream") or task.done())
    await asyncio.wait_for(task, 15)
    assert received == list(range(1, 21))


async def test_a_notification_wakes_a_waiter_without_a_recheck(settings):
    # No re-check comes before the waiter's deadline: only the notification can wake it.
    settings.ARTIFACTS_RECHECK_SECONDS = 60
    session = await database_sync_to_async(new_session)("prompt")
    waiter = asyncio.create_task(poll("prompt", FeedQuery(after=0, wait_seconds=30)))
    await until(lambda: waiting("prompt"))
    await add(session, "a.txt")
    page = await asyncio.wait_for(waiter, 20)
    assert sequences(page.events) == [1]
    assert not page.timed_out


async def test_waiters_on_one_session_share_one_subscription_and_leave_nothing_behind(settings):
    settings.ARTIFACTS_RECHECK_SECONDS = 60
    session = await database_sync_to_async(new_session)("shared")
    waiters = [
        asyncio.create_task(poll("shared", FeedQuery(after=0, wait_seconds=30))) for _ in range(20)
    ]
    await until(lambda: waiting("shared", 20))
    current = hub()
    assert list(current.watches) == ["shared"]
    assert current.watches["shared"].users == 20
    await add(session, "a.txt")
    pages = await asyncio.wait_for(asyncio.gather(*waiters), 10)
    assert [sequences(p.events) for p in pages] == [[1]] * 20
    await until(lambda: current.watches == {})
    assert current._receiver is None and current._rechecker is None


async def test_a_cancelled_waiter_leaves_the_group(settings):
    settings.ARTIFACTS_RECHECK_SECONDS = 60
    await database_sync_to_async(new_session)("cancelled")
    waiter = asyncio.create_task(poll("cancelled", FeedQuery(after=0, wait_seconds=30)))
    await until(lambda: waiting("cancelled"))
    current = hub()
    channel = current.channel
    assert channel is not None
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await until(lambda: current.watches == {})
    # A message to the group no longer reaches the hub's channel.
    layer = get_channel_layer()
    await layer.group_send(events_group("cancelled"), {"type": "artifact.events", "sequence": 1})
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), 0.3)


async def test_notifications_for_other_sessions_or_types_are_ignored():
    current = hub()
    current.notify({"type": "artifact.events", "session_id": "nobody", "sequence": 3})
    current.notify({"type": "something.else"})
    assert current.watches == {}


async def test_waiters_woken_together_at_one_cursor_share_one_read(settings, page_reads):
    settings.ARTIFACTS_RECHECK_SECONDS = 60
    session = await database_sync_to_async(new_session)("fan-out")
    waiters = [
        asyncio.create_task(poll("fan-out", FeedQuery(after=0, wait_seconds=30))) for _ in range(30)
    ]
    await until(lambda: waiting("fan-out", 30))
    page_reads.clear()
    await add(session, "a.txt")
    pages = await asyncio.wait_for(asyncio.gather(*waiters), 10)
    assert [sequences(p.events) for p in pages] == [[1]] * 30
    assert page_reads == [("fan-out", 0)]


async def test_a_drain_answers_waiting_long_polls_ends_streams_and_turns_new_waiters_away():
    await database_sync_to_async(new_session)("draining")
    current = hub()
    waiter = asyncio.create_task(poll("draining", FeedQuery(after=0, wait_seconds=30)))
    pages: list = []

    async def stream():
        async with aclosing(follow("draining", FeedQuery(after=0))) as feed:
            async for page in feed:
                pages.append(page)

    follower = asyncio.create_task(stream())
    await until(lambda: waiting("draining", 2))

    assert await current.drain(5)
    page = await asyncio.wait_for(waiter, 1)
    assert (page.events, page.timed_out) == ([], True)
    await asyncio.wait_for(follower, 1)
    assert current.watches == {}
    # Arriving during the shutdown: answered at once, not held.
    late = await asyncio.wait_for(poll("draining", FeedQuery(after=0, wait_seconds=30)), 1)
    assert late.timed_out


async def test_waiters_at_the_known_head_make_no_query_before_waiting_or_at_their_deadline(
    settings, page_reads
):
    settings.ARTIFACTS_RECHECK_SECONDS = 60
    await database_sync_to_async(new_session)("known-head")
    keeper = asyncio.create_task(poll("known-head", FeedQuery(after=0, wait_seconds=30)))
    await until(lambda: waiting("known-head"))
    page_reads.clear()  # the keeper's, before it waited
    pages = await asyncio.gather(
        *(poll("known-head", FeedQuery(after=0, wait_seconds=0.3)) for _ in range(50))
    )
    assert all(p.timed_out and p.events == [] and p.next_cursor == 0 for p in pages)
    assert page_reads == []
    keeper.cancel()


async def test_a_waiter_that_skipped_its_read_still_gets_an_event_whose_notification_was_lost(
    settings,
):
    settings.CHANNEL_LAYERS = DROPPING_LAYER
    settings.ARTIFACTS_RECHECK_SECONDS = 0.3
    session = await database_sync_to_async(new_session)("lossy-known")
    keeper = asyncio.create_task(poll("lossy-known", FeedQuery(after=0, wait_seconds=30)))
    await until(lambda: waiting("lossy-known"))
    waiter = asyncio.create_task(poll("lossy-known", FeedQuery(after=0, wait_seconds=20)))
    await until(lambda: waiting("lossy-known", 2))
    await add(session, "a.txt")
    page = await waiter
    assert sequences(page.events) == [1]
    # Found by a re-check: at its 20 s deadline it would have timed out.
    assert not page.timed_out
    await keeper


async def test_many_subscribers_woken_together_each_get_every_event_once_in_order(settings):
    settings.ARTIFACTS_RECHECK_SECONDS = 60
    session = await database_sync_to_async(new_session)("fan-out-order")
    subscribers = 300
    received: list[list[int]] = [[] for _ in range(subscribers)]

    async def subscriber(index: int):
        async with aclosing(follow("fan-out-order", FeedQuery(after=0, limit=2))) as pages:
            async for page in pages:
                received[index].extend(sequences(page.events))
                if len(received[index]) >= 13:
                    return

    tasks = [asyncio.create_task(subscriber(i)) for i in range(subscribers)]
    await until(lambda: waiting("fan-out-order", subscribers))
    # One event, then bursts that commit while the first fan-out is in flight
    # (the pauses make that interleaving; nothing waits on them).
    await add(session, "first.txt")
    for burst in range(3):
        await asyncio.sleep(0.01)
        await add(session, *(f"{burst}-{i}.txt" for i in range(4)))
    (_done, pending) = await asyncio.wait(tasks, timeout=20)
    assert not pending
    # Pages of two, so the batches that woke subscribers together are split
    # across reads: still every event, once, in order, for each of them.
    assert received == [list(range(1, 14))] * subscribers


async def test_waiters_arriving_during_the_subscription_share_it(settings, monkeypatch):
    from artifacts import wakeups

    settings.ARTIFACTS_RECHECK_SECONDS = 60
    await database_sync_to_async(new_session)("joining")
    head_reads: list[list[str]] = []
    real = wakeups.session_heads

    async def counting(session_ids):
        head_reads.append(list(session_ids))
        return await real(session_ids)

    monkeypatch.setattr(wakeups, "session_heads", counting)
    pages = await asyncio.gather(
        *(poll("joining", FeedQuery(after=0, wait_seconds=0.5)) for _ in range(500))
    )
    assert all(p.timed_out and p.next_cursor == 0 for p in pages)
    assert head_reads == [["joining"]]
    assert hub().watches == {}


async def test_a_read_that_failed_at_a_wake_up_is_made_again_by_its_reader(settings, monkeypatch):
    """Pages read at a wake-up are kept for the readers woken by it; failures are not."""
    from django.db import OperationalError

    from artifacts import feed

    settings.ARTIFACTS_RECHECK_SECONDS = 60
    session = await database_sync_to_async(new_session)("flaky")
    real = feed.aread_page
    armed, failed = [False], []

    async def failing_once(session_id, query):
        if armed[0] and not failed:
            failed.append(query.after)
            raise OperationalError("the database went away")
        return await real(session_id, query)

    monkeypatch.setattr(feed, "aread_page", failing_once)
    waiter = asyncio.create_task(poll("flaky", FeedQuery(after=0, wait_seconds=30)))
    await until(lambda: waiting("flaky"))
    armed[0] = True
    await add(session, "a.txt")
    page = await asyncio.wait_for(waiter, 10)
    # The read begun at the wake-up failed; the waiter read again.
    assert failed == [0]
    assert sequences(page.events) == [1]
