"""Stopping a background task for certain."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """
    Cancel `task` and wait until it has finished. The cancellation is
    repeated while the task runs on: on Python 3.11, `asyncio.wait_for`
    drops a cancellation that arrives as its awaitable completes (fixed in
    3.12), and client libraries use it around their socket writes.
    """
    while not task.done():
        task.cancel()
        # Raises only if the caller itself is cancelled, which must propagate.
        await asyncio.wait({task}, timeout=1)
    if not task.cancelled():
        # Marks the outcome as seen; callers that care use task.result().
        task.exception()
