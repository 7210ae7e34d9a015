"""
Taking in a burst of feed requests without falling behind on reading them.

A long-poll's deadline counts from when the event loop first sees it. Each
request then costs real work before it waits (the host check, the header
middleware, its query, its authorisation), and the event loop runs every
step that is ready before it polls its sockets again: ten thousand requests
read in one pass would each do that work before the loop read the next
ones, which meanwhile sit unread in the kernel, their deadlines ticking on
the client's clock but not yet on ours.

`Admission.turn` lets at most `PER_PASS` requests start that work per pass
of the loop and queues the rest, in order of arrival. Between passes the
loop reads the sockets again, so every request is seen (and its deadline
set) within a pass of arriving, and the work is spread over the following
passes. The total work is the same; a request waits its turn for at most
the work of those ahead of it, which is far shorter than any deadline.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque

from . import collection

# Requests that start their work in one pass of the event loop: enough to
# keep the loop busy, few enough that the next read of the sockets comes
# within a few milliseconds.
PER_PASS = 32
# The garbage collector runs again once no request has queued for this long
# (`artifacts.collection`).
BURST_QUIET_SECONDS = 0.2


class Admission:
    """The queue of one event loop."""

    def __init__(self, per_pass: int = PER_PASS) -> None:
        self.per_pass = per_pass
        self._queue: deque[asyncio.Future[None]] = deque()
        self._started = 0
        self._pass_scheduled = False

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def turn(self) -> None:
        """Return when this request may start its work (at once unless a burst is queued)."""
        if not self._queue and self._started < self.per_pass:
            self._started += 1
            self._schedule_pass()
            return
        # A burst: no collector pauses while it is taken in.
        collection.hold(BURST_QUIET_SECONDS)
        future = asyncio.get_running_loop().create_future()
        self._queue.append(future)
        self._schedule_pass()
        await future

    def _schedule_pass(self) -> None:
        if not self._pass_scheduled:
            self._pass_scheduled = True
            # Runs in the loop's next pass, after it has polled its sockets.
            asyncio.get_running_loop().call_soon(self._next_pass)

    def _next_pass(self) -> None:
        self._pass_scheduled = False
        self._started = 0
        while self._queue and self._started < self.per_pass:
            future = self._queue.popleft()
            if not future.done():  # a request that left while queued
                future.set_result(None)
                self._started += 1
        if self._queue or self._started:
            self._schedule_pass()


_admissions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Admission] = (
    weakref.WeakKeyDictionary()
)


def admission() -> Admission:
    """The admission queue of the running event loop."""
    loop = asyncio.get_running_loop()
    current = _admissions.get(loop)
    if current is None:
        current = _admissions[loop] = Admission()
    return current
