"""
Authorising live clients in batches.

Every long-poll, event stream and socket of the feed is authorised against
the database (`attachments.access.authorize_scope_sync`) before it waits.
One trip to a database thread each would cost, for ten thousand clients
arriving together, ten thousand thread hops, and with SQLite's default of
no persistent connections ten thousand connections opened and closed: far
more than the checks themselves. `authorize` queues the check instead, and
one hop at a time takes the whole queue (up to `MAX_BATCH`) and checks it
on one connection with one query for its sessions
(`attachments.access.authorize_scopes_sync`). A lone client still gets
one hop of its own at once; a burst gets a hop per `MAX_BATCH` clients.

Each check has its own outcome: one caller's error (an unknown session, a
bad token) is that caller's alone. A database failure fails the batch it
meets, as it would have failed each of their hops.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from channels.db import database_sync_to_async

from attachments.access import authorize_scopes_sync
from attachments.models import Session

# Checks one hop runs at most: long enough to amortise a hop, short enough
# that the first caller of a burst is not kept waiting behind the last.
MAX_BATCH = 256
# Hops in flight at once (each on a thread of the loop's default pool). One:
# what arrives while it runs waits for the next, which takes it all. With
# four, a burst was checked in batches of a few, on threads that fought the
# event loop for the GIL: 10,000 WebSockets took 17-20 s to connect, against
# 12 s with one (bench/live_clients.py), at half the server's CPU.
MAX_HOPS = 1

Check = tuple[dict[str, Any], object, "asyncio.Future[Session]"]

# The connection is closed after each batch as after a request
# (`database_sync_to_async`): opened once per batch, not once per client.
_authorize_on_thread = database_sync_to_async(authorize_scopes_sync, thread_sensitive=False)


class Authorizer:
    """The batches of one event loop."""

    def __init__(self) -> None:
        self._queue: list[Check] = []
        self._hops: set[asyncio.Task[None]] = set()

    async def authorize(self, scope: dict[str, Any], session_id: object) -> Session:
        future: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        self._queue.append((scope, session_id, future))
        if len(self._hops) < MAX_HOPS:
            hop = asyncio.create_task(self._hop())
            self._hops.add(hop)
            hop.add_done_callback(self._hops.discard)
        return await future

    async def _hop(self) -> None:
        while self._queue:
            batch = [check for check in self._queue[:MAX_BATCH] if not check[2].done()]
            del self._queue[:MAX_BATCH]
            if not batch:
                continue
            try:
                outcomes = await _authorize_on_thread([(s, i) for s, i, _ in batch])
            except Exception as exc:
                # The whole batch failed (the database is down): each caller
                # gets the error to answer with, and the hop goes on, since
                # nobody awaits the hop itself.
                for _scope, _id, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:
                # Cancelled (at shutdown): so are its callers.
                for _scope, _id, future in batch:
                    future.cancel()
                raise
            for (_scope, _id, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)


_authorizers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Authorizer] = (
    weakref.WeakKeyDictionary()
)


async def authorize(scope: dict[str, Any], session_id: object) -> Session:
    """
    `attachments.access.authorize_scope(scope, session_id)`, checked in a
    batch with the other clients arriving at the same time.
    """
    loop = asyncio.get_running_loop()
    current = _authorizers.get(loop)
    if current is None:
        current = _authorizers[loop] = Authorizer()
    return await current.authorize(scope, session_id)
