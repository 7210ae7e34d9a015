"""
Which runs this process is executing: one future per run, from its launch
(`workflows.launcher`) until it settles. The records read it to tell a run
of this worker that is under way from one a crash left behind; tests and
shutdown wait on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures

_futures: dict[str, concurrent.futures.Future[None]] = {}


def track(run_id: str) -> concurrent.futures.Future[None]:
    """A future for a run about to start here; it is forgotten once it settles."""
    future: concurrent.futures.Future[None] = concurrent.futures.Future()
    _futures[run_id] = future
    future.add_done_callback(lambda _f: _futures.pop(run_id, None))
    return future


def is_running_here(run_id: str) -> bool:
    return run_id in _futures


async def wait_for_run(run_id: str) -> None:
    """Until this process has finished executing the run (for tests and shutdown)."""
    future = _futures.get(run_id)
    if future is not None:
        await asyncio.wrap_future(future)
