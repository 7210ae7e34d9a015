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

The channel layer is best effort. When it fails (Redis stopped or
unreachable), waiters stay and are served by the re-check alone; the hub
probes the layer and, once it answers again, rejoins every group at once,
since a restarted Redis has forgotten them. A restart that the client library
hid from us by reconnecting shows up as news that the re-check found and no
notification brought; the hub then rejoins that session's group. Sockets that
have groups of their own (the control socket) join and leave through the hub
(`join`, `leave`, `layer_available`) so they follow the same rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Hashable, Iterable, Iterator
from functools import partial
from typing import Any, Protocol, TypeVar

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer

from attachments.models import Session

from . import collection
from .conf import conf
from .events import NOTIFICATION_TYPE
from .groups import events_group

logger = logging.getLogger(__name__)

T = TypeVar("T")
G = TypeVar("G", bound="Group")

# channels-redis forgets group members after a day by default; long-lived
# subscriptions re-join well before that.
MEMBERSHIP_REFRESH_SECONDS = 3600.0
# Group joins and leaves in flight at once: a thousand waiters arriving
# together must not take a thousand connections from the layer's pool.
MEMBERSHIP_CONCURRENCY = 16
# While the layer is down it is probed at this interval, growing to the cap:
# prompt enough that "back" means "back within half a second".
PROBE_FIRST_SECONDS = 0.05
PROBE_MAX_SECONDS = 0.5
# A group that nobody joins; leaving it is a cheap round trip to the layer.
PROBE_GROUP = "artifact-events.probe"
PROBE_CHANNEL = "artifact-events.probe"
# Waiters' deadlines are kept to this resolution (seconds), so that those
# falling due together are answered together.
DEADLINE_RESOLUTION = 0.05
# A slot of at least this many waiters holds off the garbage collector until
# this long after the last such slot (`artifacts.collection`).
HOLD_COLLECTION_BATCH = 100
HOLD_COLLECTION_SECONDS = 0.5
# The WebSocket close code for "the server is restarting; reconnect".
SERVICE_RESTART = 1012


class Closable(Protocol):
    async def close(self, code: int | bool | None = None) -> None: ...


class Group(Protocol):
    """
    Subscribers that a wake-up serves together, without resuming their tasks
    (see `SessionWatch.join`): `woken` gets the read they share once it is
    done, or None for a wake-up without news to read (a shutdown, a purge).
    """

    def __len__(self) -> int: ...

    def woken(self, read: asyncio.Future[Any] | None) -> None: ...


class Deadlines:
    """
    Futures that resolve to False at their deadline, in batches: deadlines
    are rounded up to the next `DEADLINE_RESOLUTION` slot and each slot has
    one timer, so ten thousand waiters that time out together cost one timer
    and one pass, not ten thousand timers and tasks.
    """

    def __init__(self) -> None:
        self._slots: dict[int, list[tuple[asyncio.Future[bool], Callable[[], None] | None]]] = {}

    def add(
        self,
        future: asyncio.Future[bool],
        deadline: float,
        on_expire: Callable[[], None] | None = None,
    ) -> None:
        """
        Resolve `future` to False at `deadline` unless it is done by then,
        calling `on_expire()` first (see `SessionWatch.news`).
        """
        slot = math.ceil(deadline / DEADLINE_RESOLUTION)
        batch = self._slots.get(slot)
        if batch is None:
            batch = self._slots[slot] = []
            asyncio.get_running_loop().call_at(slot * DEADLINE_RESOLUTION, self._expire, slot)
        batch.append((future, on_expire))

    def _expire(self, slot: int) -> None:
        batch = self._slots.pop(slot, ())
        if len(batch) >= HOLD_COLLECTION_BATCH:
            # Many answers fall due: no collector pauses until they are out.
            collection.hold(HOLD_COLLECTION_SECONDS)
        for future, on_expire in batch:
            if future.done():
                continue
            if on_expire is not None:
                try:
                    on_expire()
                except Exception:
                    logger.exception("Answering a waiter at its deadline failed")
            future.set_result(False)


class SessionWatch:
    """What this process knows about one session's stream, shared by its local waiters."""

    def __init__(self, session_id: str, deadlines: Deadlines) -> None:
        self.session_id = session_id
        self.head = 0
        # True once the session is known to be purged: its head means nothing.
        self.gone = False
        self.users = 0
        self.subscribed = False
        self.subscribing: asyncio.Future[None] | None = None
        self.lock = asyncio.Lock()
        self._deadlines = deadlines
        self._waiters: set[asyncio.Future[bool]] = set()
        # Waiters that said which read they make once woken (`expect`).
        self._expected: dict[Hashable, tuple[Callable[[], Any], set[asyncio.Future[bool]]]] = {}
        # Groups of subscribers served by the next wake-up (`join`).
        self._groups: dict[Hashable, tuple[Callable[[], Any], Group]] = {}
        self._reads: dict[Hashable, asyncio.Task[Any]] = {}

    @property
    def waiting(self) -> int:
        """How many local readers wait for the next wake-up."""
        return (
            len(self._waiters)
            + sum(len(futures) for _, futures in self._expected.values())
            + sum(len(group) for _, group in self._groups.values())
        )

    def knows_nothing_after(self, cursor: int | None) -> bool:
        """
        Whether this process knows there is nothing after `cursor`: the cursor
        is the session's head as last read or announced, so a reader there can
        wait without reading. A commit whose notification was lost is found by
        the next re-check, which wakes it.
        """
        return self.subscribed and not self.gone and cursor is not None and cursor == self.head

    def news(
        self, deadline: float | None = None, on_expire: Callable[[], None] | None = None
    ) -> asyncio.Future[bool]:
        """
        A future that resolves to True at the next wake-up, or to False at
        `deadline` (loop time). Take it *before* reading the database, so that
        a change committed during the read is not missed. `on_expire()` runs
        at the deadline, just before the future resolves, in the one callback
        that expires every waiter due then: a waiter can have its answer
        sent from there rather than when its task resumes.
        """
        future = asyncio.get_running_loop().create_future()
        self._waiters.add(future)
        future.add_done_callback(self._waiters.discard)
        if deadline is not None:
            self._deadlines.add(future, deadline, on_expire)
        return future

    def expect(
        self,
        future: asyncio.Future[bool],
        key: Hashable,
        read: Callable[[], Coroutine[Any, Any, Any]],
    ) -> None:
        """
        Say that the waiter of `future` (from `news`) reads `read()`, shared
        under `key`, when woken. A wake-up that moves the head then starts
        that read first (one per key, `shared`) and resolves the futures
        that expect it once it is done: ten thousand subscribers woken by
        one commit find their page ready and go straight on to send it,
        instead of each resuming once to join the read and again for its
        result.
        """
        if future.done() or future not in self._waiters:
            return
        self._waiters.discard(future)
        entry = self._expected.get(key)
        if entry is None:
            entry = self._expected[key] = (read, set())
        entry[1].add(future)
        future.add_done_callback(entry[1].discard)

    def withdraw(self, future: asyncio.Future[bool]) -> bool:
        """
        Take the waiter of `future` (from `news`) off the next wake-up, for it
        to wait in a group (`join`) instead. False if the wake-up has already
        come for it: it must read again.
        """
        if future.done() or future not in self._waiters:
            return False
        self._waiters.discard(future)
        return True

    def join(
        self,
        key: Hashable,
        read: Callable[[], Coroutine[Any, Any, Any]],
        make: Callable[[], G],
    ) -> G:
        """
        The group waiting under `key` for the next wake-up, made by `make()`
        if there is none. A wake-up that moves the head starts `read()`
        (shared under `key` with the waiters that `expect` it) and hands it
        to the group's `woken` once it is done, so that one callback serves
        every subscriber at that cursor; one without news calls `woken(None)`.
        """
        entry = self._groups.get(key)
        if entry is None:
            entry = self._groups[key] = (read, make())
        return entry[1]  # type: ignore[return-value]

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
            # A page read is kept until the next wake-up (the readers woken
            # after a read begun for them, `expect`, come for it once it is
            # done); a failed one is forgotten, so the next caller tries again.
            task.add_done_callback(_forget(self._reads, key, unless_read=True))
        return task

    @property
    def reading(self) -> bool:
        """Whether a shared read is in flight."""
        return any(not task.done() for task in self._reads.values())

    def advance(self, head: int) -> None:
        """Record that events up to `head` have committed, waking waiters if that is news."""
        if head > self.head:
            self.head = head
            self.wake(read_first=True)

    def wake(self, read_first: bool = False) -> None:
        """
        Resolve every waiter's future to True. With `read_first` (the head
        moved, so they will read), the reads they said they make (`expect`)
        are started now and their futures resolved once those are done;
        otherwise (a shutdown, where a waiter at the head needs no read)
        every future at once.
        """
        waiters, self._waiters = self._waiters, set()
        expected, self._expected = self._expected, {}
        groups, self._groups = self._groups, {}
        # Reads begun before this wake-up may have missed its news.
        self._reads = {}
        for key, (read, futures) in expected.items():
            if read_first:
                pending = [future for future in futures if not future.done()]
                if pending:
                    self.shared(key, read).add_done_callback(partial(_resolve, pending))
            else:
                waiters.update(futures)
        for key, (read, group) in groups.items():
            if not len(group):
                continue
            if read_first:
                self.shared(key, read).add_done_callback(group.woken)
            else:
                group.woken(None)
        _resolve(waiters)


def _resolve(futures: Iterable[asyncio.Future[bool]], _read: object = None) -> None:
    for future in futures:
        if not future.done():
            future.set_result(True)


def _forget(
    reads: dict[Hashable, asyncio.Task[Any]], key: Hashable, unless_read: bool = False
) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        failed = task.cancelled() or task.exception() is not None
        if reads.get(key) is task and (failed or not unless_read):
            del reads[key]

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
        self.deadlines = Deadlines()
        self._reads: dict[Hashable, asyncio.Task[Any]] = {}
        self.layer: BaseChannelLayer | None = None
        self.channel: str | None = None
        self._channel_lock = asyncio.Lock()
        self._membership = asyncio.Semaphore(MEMBERSHIP_CONCURRENCY)
        self._receiver: asyncio.Task[None] | None = None
        self._rechecker: asyncio.Task[None] | None = None
        # Set while the channel layer answers; cleared from its first failure
        # until the probe finds it back.
        self._layer_up = asyncio.Event()
        self._layer_up.set()
        self._prober: asyncio.Task[None] | None = None
        # Shutdown: see `drain`.
        self._draining = False
        self._sockets: set[Closable] = set()
        self._requests = 0
        self._quiet = asyncio.Event()

    @property
    def draining(self) -> bool:
        """True once the process is shutting down: live clients are answered and let go."""
        return self._draining

    def add_socket(self, socket: Closable) -> None:
        """Count an accepted WebSocket as a live client, closed with 1012 by `drain`."""
        self._sockets.add(socket)

    def discard_socket(self, socket: Closable) -> None:
        self._sockets.discard(socket)
        self._check_quiet()

    @contextlib.contextmanager
    def live_request(self) -> Iterator[None]:
        """Count a feed request (long-poll or SSE) in flight until its response has been sent."""
        self._requests += 1
        try:
            yield
        finally:
            self._requests -= 1
            self._check_quiet()

    def _check_quiet(self) -> None:
        if self._draining and not (self.watches or self._sockets or self._requests):
            self._quiet.set()

    async def drain(self, timeout: float) -> bool:
        """
        Let go of every live client of this loop: waiting long-polls return
        their current page, event streams end (with a `retry:` hint), sockets
        close with 1012 (Service Restart), and clients arriving from now on get
        the same at once. Returns whether all had left within `timeout` seconds.
        """
        if not self._draining:
            self._draining = True
            for watch in list(self.watches.values()):
                watch.wake()
            for socket in list(self._sockets):
                try:
                    await socket.close(code=SERVICE_RESTART)
                except Exception:
                    # The connection is already going away.
                    self._sockets.discard(socket)
        self._check_quiet()
        try:
            await asyncio.wait_for(self._quiet.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def layer_is_up(self) -> bool:
        """False from a failed channel-layer call until the layer answers again."""
        return self._layer_up.is_set()

    async def layer_available(self) -> None:
        """Return once the channel layer answers (at once, unless it is known to be down)."""
        await self._layer_up.wait()

    def shared_read(
        self, key: Hashable, read: Callable[[], Coroutine[Any, Any, T]]
    ) -> asyncio.Future[T]:
        """
        The result of `read()`, shared with every caller that asks for the same
        key while it is in flight: long-polls that arrive together on a session
        this process does not follow yet make one query. Someone that joins a
        read begun before it arrived may miss a commit made in between; a
        waiter then finds it when it subscribes (`watch` reads the head after
        joining). Await it through `asyncio.shield`.
        """
        task = self._reads.get(key)
        if task is None:
            task = self._reads[key] = asyncio.ensure_future(read())
            task.add_done_callback(_forget(self._reads, key))
        return task

    def known_head(self, session_id: str) -> int | None:
        """The session's last sequence as this process knows it, if it follows the session."""
        watch = self.watches.get(session_id)
        if watch is None or not watch.subscribed or watch.gone:
            return None
        return watch.head

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
            watch = self.watches[session_id] = SessionWatch(session_id, self.deadlines)
        watch.users += 1
        try:
            if not watch.subscribed:
                await asyncio.shield(self._subscribing(watch))
            yield watch
        finally:
            watch.users -= 1
            if not watch.users:
                # Shielded: a cancelled waiter must still leave the group.
                await asyncio.shield(self._release(watch))

    def _subscribing(self, watch: SessionWatch) -> asyncio.Future[None]:
        """
        The subscription in progress, shared by every waiter that arrives
        meanwhile: ten thousand long-polls queueing on the watch's lock would
        cost time quadratic in their number (`asyncio.Lock.acquire` scans its
        waiters). Await it through `asyncio.shield`.
        """
        if watch.subscribing is None or watch.subscribing.done():
            watch.subscribing = asyncio.ensure_future(self._subscribe_once(watch))
        return watch.subscribing

    async def _subscribe_once(self, watch: SessionWatch) -> None:
        async with watch.lock:
            if not watch.subscribed:
                await self._subscribe(watch)

    async def join(self, layer: BaseChannelLayer, group: str, channel: str) -> bool:
        """
        Add `channel` to `group`, best effort: False (and the layer marked
        down, to be probed) if the layer failed or is known to be down.
        Whoever gets False joins again after `layer_available()`.
        """
        if not self.layer_is_up:
            return False
        try:
            async with self._membership:
                await layer.group_add(group, channel)
        except Exception as exc:
            self.layer_failed(layer, exc)
            return False
        return True

    async def leave(self, layer: BaseChannelLayer, group: str, channel: str) -> None:
        """Remove `channel` from `group`, best effort (a layer that is down forgets by itself)."""
        if not self.layer_is_up:
            return
        try:
            async with self._membership:
                await layer.group_discard(group, channel)
        except Exception as exc:
            self.layer_failed(layer, exc)

    def layer_failed(self, layer: BaseChannelLayer, exc: BaseException) -> None:
        """
        Note that a call to the channel layer failed: until a probe finds it
        back, waiters rely on the database re-check and nobody calls the layer.
        """
        if self._prober is not None and not self._prober.done():
            return
        self._layer_up.clear()
        logger.warning(
            "Channel layer unavailable (%s: %s); artifact-event waiters rely on database "
            "re-checks until it is back.",
            type(exc).__name__,
            exc,
        )
        self._prober = asyncio.create_task(self._probe_until_back(layer))

    async def _probe_until_back(self, layer: BaseChannelLayer) -> None:
        delay = PROBE_FIRST_SECONDS
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, PROBE_MAX_SECONDS)
            try:
                await layer.group_discard(PROBE_GROUP, PROBE_CHANNEL)
                rejoined = await self._rejoin_all(layer)
            except Exception:
                continue
            break
        self._layer_up.set()
        logger.warning("Channel layer is back; rejoined %d artifact-event groups.", rejoined)

    async def _rejoin_all(self, layer: BaseChannelLayer) -> int:
        """Join the group of every watched session again; raises if the layer fails."""
        target = self.layer
        if target is None or target is not layer or self.channel is None:
            return 0
        channel = self.channel
        watches = [watch for watch in self.watches.values() if watch.subscribed]

        async def rejoin(watch: SessionWatch) -> None:
            async with self._membership:
                await target.group_add(events_group(watch.session_id), channel)

        await asyncio.gather(*(rejoin(watch) for watch in watches))
        return len(watches)

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
            channel = await self._channel(layer)
            # A layer that is down is skipped: the probe joins every watched
            # session's group once it is back.
            await self.join(layer, events_group(watch.session_id), channel)
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
        async with watch.lock:
            if watch.users:
                return
            if watch.subscribed and self.layer is not None and self.channel is not None:
                await self.leave(self.layer, events_group(watch.session_id), self.channel)
            watch.subscribed = False
            if watch.users == 0 and self.watches.get(watch.session_id) is watch:
                del self.watches[watch.session_id]
                if not self.watches:
                    self._stop()
                    self._check_quiet()

    async def _receive_forever(self, layer: BaseChannelLayer, channel: str) -> None:
        while True:
            await self._layer_up.wait()
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.layer_failed(layer, exc)
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
            watch.gone = True
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
                await self._refresh_memberships(list(self.watches))

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
        missed: list[str] = []
        for session_id in session_ids:
            watch = self.watches.get(session_id)
            if watch is None:
                continue
            if session_id in heads:
                if heads[session_id] > watch.head and watch.subscribed:
                    missed.append(session_id)
                watch.advance(heads[session_id])
            else:
                # Purged: waiters re-read and answer 404.
                watch.gone = True
                watch.wake()
        if missed:
            # The news came without its notification: the layer may have lost
            # our membership (a Redis restart hidden by a reconnect), or only
            # the message. Joining again is idempotent, so do it either way.
            await self._refresh_memberships(missed)

    async def _refresh_memberships(self, session_ids: list[str]) -> None:
        if self.layer is None or self.channel is None:
            return
        for session_id in session_ids:
            watch = self.watches.get(session_id)
            if watch is not None and watch.subscribed:
                await self.join(self.layer, events_group(session_id), self.channel)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EventHub] = weakref.WeakKeyDictionary()


def hub() -> EventHub:
    """The hub of the running event loop."""
    loop = asyncio.get_running_loop()
    current = _hubs.get(loop)
    if current is None:
        current = _hubs[loop] = EventHub()
    return current
