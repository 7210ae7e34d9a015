"""
Where runs execute: as asyncio tasks on the server's own event loop.

Under an ASGI server, a request's sync view runs in a thread that asgiref
ties to the server's loop; the run is scheduled there, so its channel-layer
messages reach the /ws consumers of this process directly (which the
in-memory layer needs) and it holds no thread while it waits. Outside an
ASGI server (the sync test client, a management command, WSGI) there is no
such loop, and runs go to one private loop thread instead.

At interpreter exit, the process groups of nodes still running are killed.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import os
import threading

from asgiref.sync import SyncToAsync

from .python_node import kill_group, live_process_groups
from .runner import execute_run
from .running import track

_private_loop: asyncio.AbstractEventLoop | None = None
_private_lock = threading.Lock()


def launch(run_id: str) -> None:
    """Start executing the run in the background; returns at once."""
    loop = _server_loop() or _background_loop()
    future = track(run_id)

    def start() -> None:
        task = loop.create_task(execute_run(run_id))
        task.add_done_callback(lambda t: _settle(future, t))

    # A fresh context: the request's would tie the run's database calls to
    # the request's executor thread, which asgiref retires with the request.
    loop.call_soon_threadsafe(start, context=contextvars.Context())


def _settle(future: concurrent.futures.Future[None], task: asyncio.Task[None]) -> None:
    if task.cancelled():
        future.cancel()
    elif task.exception() is not None:
        future.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        future.set_result(None)


def _server_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    # Set by asgiref in the threads where it runs sync code for an async caller.
    local = SyncToAsync.threadlocal
    loop = getattr(local, "main_event_loop", None)
    if (
        isinstance(loop, asyncio.AbstractEventLoop)
        and getattr(local, "main_event_loop_pid", None) == os.getpid()
        and loop.is_running()
    ):
        return loop
    return None


def _background_loop() -> asyncio.AbstractEventLoop:
    global _private_loop
    with _private_lock:
        if _private_loop is None or _private_loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="workflow-runs", daemon=True)
            thread.start()
            _private_loop = loop
        return _private_loop


@atexit.register
def _kill_live_nodes() -> None:
    for pgid in list(live_process_groups):
        kill_group(pgid)
