"""
Running a coroutine at once, from a callback, without a task for it.

A page pushed to ten thousand sockets is ten thousand calls to the ASGI
server's `send`, which writes the frame and returns without suspending
while the socket is writable. Resuming a task per socket for that costs
more than the send itself. `start` runs the coroutine in the caller, up to
its first suspension; only one that does suspend (a client that reads too
slowly, whose socket is not writable) is handed to a task that finishes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any


def start(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """
    Run `coroutine` now. None if it finished (an exception it raised
    propagates); else the task that runs the rest of it, as any task would
    have from the point where it suspended.
    """
    try:
        waiting = coroutine.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_Rest(coroutine, waiting))


class _Rest(Coroutine[Any, Any, None]):
    """
    The rest of a coroutine that has handed `waiting` (the future it waits
    for) to its event loop, as a coroutine of its own for a task to run: its
    first step hands the task that future, and every later one (a
    cancellation included, even one that comes before the first step) goes
    to the coroutine.
    """

    def __init__(self, coroutine: Coroutine[Any, Any, None], waiting: Any) -> None:
        self._coroutine = coroutine
        self._waiting: Any = waiting
        self._started = False

    def send(self, value: Any) -> Any:
        if not self._started:
            self._started = True
            return self._waiting
        return self._coroutine.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._started = True
        if val is None and tb is None:
            return self._coroutine.throw(typ)
        return self._coroutine.throw(typ, val, tb)  # pragma: no cover (the old signature)

    def close(self) -> None:
        self._coroutine.close()

    def __await__(self) -> Generator[Any, Any, None]:
        # Only a task runs it (`start`), through `send` and `throw`.
        raise TypeError("run by a task, not awaited")
