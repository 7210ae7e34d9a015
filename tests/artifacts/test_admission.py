"""A burst of feed requests starts its work a few per pass of the event loop, in arrival order."""

from __future__ import annotations

import asyncio

from artifacts.admission import Admission


async def next_pass() -> None:
    # A callback scheduled now runs in the loop's next pass; so does this wake-up.
    await asyncio.sleep(0)


async def test_a_lone_request_starts_at_once():
    admission = Admission(per_pass=4)
    await asyncio.wait_for(admission.turn(), 1)
    assert admission.waiting == 0


async def test_a_burst_starts_a_few_per_pass_in_arrival_order():
    admission = Admission(per_pass=4)
    started: list[int] = []

    async def request(index: int) -> None:
        await admission.turn()
        started.append(index)

    tasks = [asyncio.create_task(request(i)) for i in range(10)]
    await next_pass()
    # The first pass: four start at once, six wait their turn.
    assert started == [0, 1, 2, 3]
    assert admission.waiting == 6
    while admission.waiting:
        before = len(started)
        await next_pass()
        assert len(started) - before <= 4
    await asyncio.gather(*tasks)
    assert started == list(range(10))


async def test_a_request_that_leaves_while_queued_takes_no_turn():
    admission = Admission(per_pass=1)
    first = asyncio.create_task(admission.turn())
    leaving = asyncio.create_task(admission.turn())
    staying = asyncio.create_task(admission.turn())
    await next_pass()
    assert first.done() and admission.waiting == 2
    leaving.cancel()
    # The next pass skips the one that left and starts the one behind it.
    await next_pass()
    await next_pass()
    assert leaving.cancelled()
    assert staying.done()
    assert admission.waiting == 0
