"""
Waking the readers that wait for a session's next event.

Each process (event loop) has one `EventHub`. It joins the channel-layer
group of every session that has a local waiter, with a single channel, and
turns the after-commit notifications of any process into a wake-up of the
local waiters of that session. The notification is only a hint: waiters
re-read the database when woken, and the hub re-reads the last sequence of
every watched session every `ARTIFACTS_RECHECK_SECONDS`, so a lost message
(channels-redis drops messages over capacity or past expiry) delays a waiter
by at most that interval.

Sharing one channel and one re-check per process keeps the cost of idle
waiters flat: a thousand long-polls on one session are one group member
and one query per interval, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Hashable
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer

from attachments.models import Session

from .conf import conf
from .events import NOTIFICATION_TYPE
from .groups import events_group

logger = logging.getLogger(__name__)

T = TypeVar("T")

# channels-redis forgets group members after a day by default; long-lived
# subscriptions re-join well before that.
MEMBERSHIP_REFRESH_SECONDS = 3600.0
# Group joins and leaves in flight at once: a thousand waiters arriving
# together must not take a thousand connections from the layer's pool.
MEMBERSHIP_CONCURRENCY = 16


class SessionWatch:
    """What this process knows about one session's stream, shared by its local waiters."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.head = 0
        self.users = 0
        self.subscribed = False
        self.lock = asyncio.Lock()
        self._signal = asyncio.Event()
        self._reads: dict[Hashable, asyncio.Task[Any]] = {}

    def signal(self) -> asyncio.Event:
        """The event the next change sets. Take it *before* reading the database."""
        return self._signal

    def shared(
        self, key: Hashable, read: Callable[[], Coroutine[Any, Any, T]]
    ) -> asyncio.Future[T]:
        """
        The result of `read()`, shared with every caller that asks for the same
        key before the next wake-up: when a commit wakes a hundred subscribers
        at the same cursor, they make one query, not a hundred. Sharing stops
        at each wake-up, so a caller never joins a read that started before
        the change it was woken for. Await it through `asyncio.shield`.
        """
        task = self._reads.get(key)
        if task is None:
            task = self._reads[key] = asyncio.ensure_future(read())
            task.add_done_callback(_forget(self._reads, key))
        return task

    def advance(self, head: int) -> None:
        """Record that events up to `head` have committed, waking waiters if that is news."""
        if head > self.head:
            self.head = head
            self.wake()

    def wake(self) -> None:
        signal, self._signal = self._signal, asyncio.Event()
        self._reads = {}
        signal.set()


def _forget(
    reads: dict[Hashable, asyncio.Task[Any]], key: Hashable
) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        if reads.get(key) is task:
            del reads[key]
        if not task.cancelled():
            # Seen here, so a read whose callers all left logs no warning.
            task.exception()

    return done


def _session_heads(session_ids: list[str]) -> dict[str, int]:
    """The last sequence of each live session among `session_ids` (purged ones are left out)."""
    rows = (
        Session.objects.live()
        .filter(session_id__in=session_ids)
        .values_list("session_id", "event_stream__last_sequence")
    )
    return {session_id: last or 0 for session_id, last in rows}


session_heads = database_sync_to_async(_session_heads, thread_sensitive=False)


class EventHub:
    """Wake-ups for one event loop: see the module docstring."""

    def __init__(self) -> None:
        self.watches: dict[str, SessionWatch] = {}
        self.layer: BaseChannelLayer | None = None
        self.channel: str | None = None
        self._channel_lock = asyncio.Lock()
        self._membership = asyncio.Semaphore(MEMBERSHIP_CONCURRENCY)
        self._receiver: asyncio.Task[None] | None = None
        self._rechecker: asyncio.Task[None] | None = None

    def is_watching(self, session_id: str) -> bool:
        """Whether this process already follows the session (joining it is then cheap)."""
        watch = self.watches.get(session_id)
        return watch is not None and watch.subscribed

    @contextlib.asynccontextmanager
    async def watch(self, session_id: str) -> AsyncIterator[SessionWatch]:
        """Keep this process subscribed to the session's events while the block runs."""
        watch = self.watches.get(session_id)
        if watch is None:
            if not self.watches:
                self._start()
            watch = self.watches[session_id] = SessionWatch(session_id)
        watch.users += 1
        try:
            async with watch.lock:
                if not watch.subscribed:
                    await self._subscribe(watch)
            yield watch
        finally:
            # Shielded: a cancelled waiter must still leave the group.
            await asyncio.shield(self._release(watch))

    def _start(self) -> None:
        # The layer is looked up afresh on each start, so settings changes
        # (tests) take effect once the hub has been idle.
        self.layer = get_channel_layer()
        self.channel = None
        self._rechecker = asyncio.create_task(self._recheck_forever())

    def _stop(self) -> None:
        for task in (self._receiver, self._rechecker):
            if task is not None:
                task.cancel()
        self._receiver = self._rechecker = None

    async def _subscribe(self, watch: SessionWatch) -> None:
        layer = self.layer
        if layer is not None:
            try:
                channel = await self._channel(layer)
                async with self._membership:
                    await layer.group_add(events_group(watch.session_id), channel)
            except Exception:
                logger.exception("Could not join the events group; relying on re-checks.")
        # Known heads come from the database after joining, so nothing that
        # commits from here on can go unnoticed.
        heads = await session_heads([watch.session_id])
        watch.advance(heads.get(watch.session_id, 0))
        watch.subscribed = True

    async def _channel(self, layer: BaseChannelLayer) -> str:
        async with self._channel_lock:
            if self.channel is None:
                self.channel = await layer.new_channel()
                self._receiver = asyncio.create_task(self._receive_forever(layer, self.channel))
            return self.channel

    async def _release(self, watch: SessionWatch) -> None:
        watch.users -= 1
        if watch.users:
            return
        async with watch.lock:
            if watch.users:
                return
            if watch.subscribed and self.layer is not None and self.channel is not None:
                try:
                    async with self._membership:
                        await self.layer.group_discard(events_group(watch.session_id), self.channel)
                except Exception:
                    logger.exception("Could not leave the events group.")
            watch.subscribed = False
            if watch.users == 0 and self.watches.get(watch.session_id) is watch:
                del self.watches[watch.session_id]
                if not self.watches:
                    self._stop()

    async def _receive_forever(self, layer: BaseChannelLayer, channel: str) -> None:
        while True:
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Channel layer receive failed; retrying.")
                await asyncio.sleep(1)
                continue
            self.notify(message)

    def notify(self, message: dict[str, Any]) -> None:
        """Handle one notification from `artifacts.events.announce`."""
        if message.get("type") != NOTIFICATION_TYPE:
            return
        watch = self.watches.get(str(message.get("session_id")))
        if watch is None:
            return
        if message.get("purged"):
            watch.wake()
        else:
            sequence = message.get("sequence")
            if isinstance(sequence, int):
                watch.advance(sequence)

    async def _recheck_forever(self) -> None:
        loop = asyncio.get_running_loop()
        refreshed = loop.time()
        while True:
            await asyncio.sleep(conf.RECHECK_SECONDS)
            await self.recheck()
            if loop.time() - refreshed > MEMBERSHIP_REFRESH_SECONDS:
                refreshed = loop.time()
                await self._refresh_memberships()

    async def recheck(self) -> None:
        """Compare every watched session with the database, waking waiters that missed news."""
        session_ids = list(self.watches)
        if not session_ids:
            return
        try:
            heads = await session_heads(session_ids)
        except Exception:
            logger.exception("Could not re-check artifact event heads.")
            return
        for session_id in session_ids:
            watch = self.watches.get(session_id)
            if watch is None:
                continue
            if session_id in heads:
                watch.advance(heads[session_id])
            else:
                # Purged: waiters re-read and answer 404.
                watch.wake()

    async def _refresh_memberships(self) -> None:
        if self.layer is None or self.channel is None:
            return
        for watch in list(self.watches.values()):
            if watch.subscribed:
                with contextlib.suppress(Exception):
                    async with self._membership:
                        await self.layer.group_add(events_group(watch.session_id), self.channel)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EventHub] = weakref.WeakKeyDictionary()


def hub() -> EventHub:
    """The hub of the running event loop."""
    loop = asyncio.get_running_loop()
    current = _hubs.get(loop)
    if current is None:
        current = _hubs[loop] = EventHub()
    return current
