"""
Pages pushed to a session's subscribers from one callback (`feed.push`):
every subscriber still gets every matching event once, in order, whatever
its filters, its speed or the timing of commits; a slow or failing one is
taken over by its own task without holding up the others.
"""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from artifacts import eager
from artifacts.feed import FeedQuery, Filters, Page, push
from artifacts.wakeups import hub
from attachments.exceptions import SessionNotFound
from attachments.sessions import purge_session

from .builders import add_attachment, new_session, sequences, until, waiting

pytestmark = pytest.mark.django_db(transaction=True)


async def add(session, *names: str) -> None:
    for name in names:
        await database_sync_to_async(add_attachment)(session, name)


async def cancelled(tasks: list[asyncio.Task]) -> None:
    """Cancel a test's subscriptions and wait until they have ended."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Recorder:
    """A subscriber's send: records the sequences it was given, in order."""

    def __init__(self) -> None:
        self.sequences: list[int] = []
        self.calls = 0

    async def __call__(self, page: Page) -> None:
        self.calls += 1
        self.sequences.extend(sequences(page.events))


async def test_every_subscriber_gets_every_event_once_in_order(settings):
    settings.ARTIFACTS_RECHECK_SECONDS = 60
    session = await database_sync_to_async(new_session)("push-order")
    recorders = [Recorder() for _ in range(300)]
    tasks = [
        asyncio.create_task(push("push-order", FeedQuery(after=0, limit=2), recorder))
        for recorder in recorders
    ]
    await until(lambda: waiting("push-order", len(recorders)))
    # One event, then bursts that commit while the first fan-out is in
    # flight (the pauses make that interleaving; nothing waits on them).
    await add(session, "first.txt")
    for burst in range(3):
        await asyncio.sleep(0.01)
        await add(session, *(f"{burst}-{i}.txt" for i in range(4)))
    await until(lambda: all(len(r.sequences) >= 13 for r in recorders))
    await cancelled(tasks)
    assert [r.sequences for r in recorders] == [list(range(1, 14))] * len(recorders)
    assert hub().watches == {}


async def test_filters_apply_and_the_cursor_moves_past_what_they_drop(settings):
    settings.ARTIFACTS_RECHECK_SECONDS = 60
    session = await database_sync_to_async(new_session)("push-filters")
    images, everything = Recorder(), Recorder()
    only_png = FeedQuery(after=0, filters=Filters(exts=("png",)))
    tasks = [
        asyncio.create_task(push("push-filters", only_png, images)),
        asyncio.create_task(push("push-filters", FeedQuery(after=0), everything)),
    ]
    await until(lambda: waiting("push-filters", 2))
    await add(session, "a.txt", "b.png")
    await until(lambda: waiting("push-filters", 2) and len(everything.sequences) == 2)
    await add(session, "c.txt", "d.png")
    await until(lambda: len(images.sequences) == 2 and len(everything.sequences) == 4)
    await cancelled(tasks)
    assert images.sequences == [2, 4]
    assert everything.sequences == [1, 2, 3, 4]


async def test_a_slow_subscriber_holds_up_nobody_and_still_gets_everything_in_order(settings):
    settings.ARTIFACTS_RECHECK_SECONDS = 60
    session = await database_sync_to_async(new_session)("push-slow")
    unblock = asyncio.Event()
    slow_sequences: list[int] = []

    async def slow(page: Page) -> None:
        # The first send waits, as the server's does for a socket that is
        # not writable; later ones come after it, in order.
        if not slow_sequences:
            await unblock.wait()
        slow_sequences.extend(sequences(page.events))

    fast = Recorder()
    tasks = [
        asyncio.create_task(push("push-slow", FeedQuery(after=0), slow)),
        asyncio.create_task(push("push-slow", FeedQuery(after=0), fast)),
    ]
    await until(lambda: waiting("push-slow", 2))
    await add(session, "a.txt")
    await until(lambda: fast.sequences == [1])
    await add(session, "b.txt")
    await until(lambda: fast.sequences == [1, 2])
    assert slow_sequences == []
    unblock.set()
    await until(lambda: slow_sequences == [1, 2])
    await add(session, "c.txt")
    await until(lambda: slow_sequences == [1, 2, 3] and fast.sequences == [1, 2, 3])
    await cancelled(tasks)


async def test_a_failing_send_ends_that_subscription_alone(settings):
    settings.ARTIFACTS_RECHECK_SECONDS = 60
    session = await database_sync_to_async(new_session)("push-failing")

    async def failing(page: Page) -> None:
        raise ConnectionResetError("the client went away")

    healthy = Recorder()
    broken = asyncio.create_task(push("push-failing", FeedQuery(after=0), failing))
    task = asyncio.create_task(push("push-failing", FeedQuery(after=0), healthy))
    await until(lambda: waiting("push-failing", 2))
    await add(session, "a.txt")
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(broken, 10)
    await until(lambda: healthy.sequences == [1])
    await add(session, "b.txt")
    await until(lambda: healthy.sequences == [1, 2])
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_one_commit_is_one_read_for_a_group_of_subscribers(settings, page_reads):
    settings.ARTIFACTS_RECHECK_SECONDS = 60
    session = await database_sync_to_async(new_session)("push-reads")
    recorders = [Recorder() for _ in range(50)]
    tasks = [
        asyncio.create_task(push("push-reads", FeedQuery(after=0), recorder))
        for recorder in recorders
    ]
    await until(lambda: waiting("push-reads", len(recorders)))
    page_reads.clear()
    await add(session, "a.txt")
    await until(lambda: all(r.sequences == [1] for r in recorders))
    await until(lambda: waiting("push-reads", len(recorders)))
    assert page_reads == [("push-reads", 0)]
    await cancelled(tasks)


async def test_a_purge_ends_the_subscription_with_not_found(settings):
    settings.ARTIFACTS_RECHECK_SECONDS = 60
    session = await database_sync_to_async(new_session)("push-purged")
    task = asyncio.create_task(push("push-purged", FeedQuery(after=0), Recorder()))
    await until(lambda: waiting("push-purged"))
    await database_sync_to_async(purge_session)(session)
    with pytest.raises(SessionNotFound):
        await asyncio.wait_for(task, 10)


async def test_a_drain_ends_the_subscription():
    await database_sync_to_async(new_session)("push-draining")
    task = asyncio.create_task(push("push-draining", FeedQuery(after=0), Recorder()))
    await until(lambda: waiting("push-draining"))
    current = hub()
    assert await current.drain(5)
    await asyncio.wait_for(task, 1)
    assert current.watches == {}


# eager.start ----------------------------------------------------------------


async def test_a_coroutine_that_does_not_suspend_runs_to_its_end_at_once():
    done: list[int] = []

    async def quick() -> None:
        done.append(1)

    assert eager.start(quick()) is None
    assert done == [1]


async def test_a_coroutine_that_suspends_is_finished_by_a_task():
    gate = asyncio.Event()
    steps: list[str] = []

    async def slow() -> None:
        steps.append("start")
        await gate.wait()
        steps.append("end")

    task = eager.start(slow())
    assert task is not None and steps == ["start"]
    gate.set()
    await asyncio.wait_for(task, 5)
    assert steps == ["start", "end"]


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits():
    cleaned: list[bool] = []

    async def slow() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(True)

    task = eager.start(slow())
    assert task is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]


async def test_an_error_before_the_first_suspension_is_raised_to_the_caller():
    async def failing() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError):
        eager.start(failing())
