"""
The event feed: cursor pages over a session's artifact events, and waiting
for the next one.

A cursor is a sequence number. A page holds the matching events with
`sequence > after`, in order, and `next_cursor`, which advances past events
the filters dropped. Because sequences commit in order (see
`artifacts.events`), a reader that passes `after=next_cursor` each time sees
every matching event exactly once, whichever process serves it.

Every transport (long-poll, Server-Sent Events, WebSocket) reads through
`read_page`, so they share the cursor rules: a cursor beyond the last
sequence is `CursorAhead`, one below what retention kept is `CursorExpired`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Coroutine, Hashable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache, partial
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.db.models import Q, QuerySet

from attachments.exceptions import SessionNotFound
from attachments.models import Session
from attachments.selection import FileFilters
from attachments.sessions import validate_session_id

from . import eager
from .conf import conf
from .exceptions import CursorAhead, CursorExpired
from .models import ArtifactEvent, EventStream
from .serializers import FeedParameters, LongPollParameters
from .wakeups import SessionWatch, hub

T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Filters:
    """Which events a reader wants; the cursor still advances past the others."""

    mimes: tuple[str, ...] = ()
    mime_prefixes: tuple[str, ...] = ()
    exts: tuple[str, ...] = ()
    # Multi-part extensions ("tar.gz") are matched on the end of the name.
    compound_exts: tuple[str, ...] = ()
    max_size: int | None = None

    @classmethod
    def from_selection(cls, selected: FileFilters) -> Filters:
        """The same filters as the zip's, split the way the event query uses them."""
        mime_types = selected.mime_types
        extensions = selected.extensions
        return cls(
            mimes=tuple(mime for mime in mime_types if not mime.endswith("/")),
            mime_prefixes=tuple(mime for mime in mime_types if mime.endswith("/")),
            exts=tuple(ext for ext in extensions if "." not in ext),
            compound_exts=tuple(ext for ext in extensions if "." in ext),
            max_size=selected.max_size,
        )

    def apply(self, events: QuerySet[ArtifactEvent]) -> QuerySet[ArtifactEvent]:
        if self.mimes or self.mime_prefixes:
            by_mime = Q(mime__in=self.mimes) if self.mimes else Q(pk__in=[])
            for prefix in self.mime_prefixes:
                by_mime |= Q(mime__startswith=prefix)
            events = events.filter(by_mime)
        if self.exts or self.compound_exts:
            by_ext = Q(ext__in=self.exts) if self.exts else Q(pk__in=[])
            for compound in self.compound_exts:
                by_ext |= Q(name__iendswith="." + compound)
            events = events.filter(by_ext)
        if self.max_size is not None:
            events = events.filter(size__lte=self.max_size)
        return events


@dataclass(frozen=True)
class FeedQuery:
    """
    A reader's position and filters. `after=None` starts at the oldest event
    still kept (pages) or at the current end (streams).
    """

    after: int | None = None
    limit: int = 200
    wait_seconds: float = 0.0
    filters: Filters = field(default_factory=Filters)


@dataclass(frozen=True)
class Page:
    events: list[dict[str, Any]]
    next_cursor: int
    has_more: bool
    last_sequence: int
    timed_out: bool = False

    def encoded(self, key: Hashable, encode: Callable[[], T]) -> T:
        """
        `encode()`, computed once per page and key. Subscribers woken together
        at one cursor share one page (`SessionWatch.shared`), so ten thousand
        sockets send one encoding of it rather than encode it ten thousand times.
        """
        memo: dict[Hashable, Any] = self.__dict__.setdefault("_encoded", {})
        if key not in memo:
            memo[key] = encode()
        return memo[key]  # type: ignore[no-any-return]

    def to_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "next_cursor": self.next_cursor,
            "has_more": self.has_more,
            "timed_out": self.timed_out,
        }


def parse_filters(params: Mapping[str, object]) -> Filters:
    """The file filters of a feed query (see `attachments.selection`)."""
    return Filters.from_selection(FileFilters.from_query(params))


def parse_query(params: Mapping[str, object], *, waiting: bool = True) -> FeedQuery:
    """
    Read a feed query from request parameters (one value each, or JSON
    values from a socket's message). Raises `InvalidParameter` naming the
    first bad one. `wait_seconds` is only read when `waiting` (the long-poll).
    """
    values = (LongPollParameters if waiting else FeedParameters).read(params)
    return FeedQuery(
        after=values.get("after"),
        limit=values["limit"],
        wait_seconds=values.get("wait_seconds", 0.0),
        filters=Filters.from_selection(FileFilters.from_parameters(values)),
    )


@dataclass(frozen=True)
class _StreamState:
    pk: int
    last_sequence: int
    trimmed_through: int


def _stream_state(session_id: str) -> _StreamState:
    validate_session_id(session_id)
    row = (
        Session.objects.live()
        .filter(session_id=session_id)
        .values_list("pk", "event_stream__last_sequence", "event_stream__trimmed_through")
        .first()
    )
    if row is None:
        raise SessionNotFound()
    pk, last, trimmed = row
    return _StreamState(pk, last or 0, trimmed or 0)


def _check_cursor(state: _StreamState, after: int) -> None:
    if after > state.last_sequence:
        raise CursorAhead(after, state.last_sequence, state.last_sequence)
    if after < state.trimmed_through:
        raise CursorExpired(after, state.trimmed_through, state.last_sequence)


def _trimmed_through(pk: int) -> int:
    trimmed = EventStream.objects.filter(pk=pk).values_list("trimmed_through", flat=True).first()
    return trimmed or 0


def read_page(session_id: str, query: FeedQuery) -> Page:
    """
    One page of matching events after the cursor, without waiting. Raises
    `InvalidSessionId`, `SessionNotFound`, `CursorAhead` or `CursorExpired`.
    """
    state = _stream_state(session_id)
    after = state.trimmed_through if query.after is None else query.after
    _check_cursor(state, after)
    # Reading the head first is what makes the page safe: every sequence up
    # to it has committed. The scan bound caps the work of one page when the
    # filters drop almost everything.
    upper = min(state.last_sequence, after + conf.MAX_SCAN_EVENTS)
    events = query.filters.apply(
        ArtifactEvent.objects.filter(session_id=state.pk, sequence__gt=after, sequence__lte=upper)
    ).order_by("sequence")
    rows = list(events[: query.limit + 1])
    if state.trimmed_through or conf.EVENT_RETENTION is not None:
        # Retention may have dropped events after `after` while we read.
        trimmed = _trimmed_through(state.pk)
        if trimmed > after:
            raise CursorExpired(after, trimmed, state.last_sequence)
    if len(rows) > query.limit:
        rows = rows[: query.limit]
        return Page(
            events=[row.to_payload() for row in rows],
            next_cursor=rows[-1].sequence,
            has_more=True,
            last_sequence=state.last_sequence,
        )
    return Page(
        events=[row.to_payload() for row in rows],
        next_cursor=upper,
        has_more=upper < state.last_sequence,
        last_sequence=state.last_sequence,
    )


def start_cursor(session_id: str, after: int | None) -> int:
    """
    Where a stream subscriber starts: its own cursor once checked, or the
    session's last sequence (live events only) if it gave none.
    """
    state = _stream_state(session_id)
    if after is None:
        return state.last_sequence
    _check_cursor(state, after)
    return after


def last_event_cursor(session: Session) -> int:
    """The session's last sequence: a cursor from which a reader sees only new events."""
    last = (
        EventStream.objects.filter(session=session).values_list("last_sequence", flat=True).first()
    )
    return last or 0


# Feed reads are brief and run on the event loop's shared thread pool, so a
# waiting reader holds no thread of its own.
aread_page = database_sync_to_async(read_page, thread_sensitive=False)
_astart_cursor = database_sync_to_async(start_cursor, thread_sensitive=False)


async def astart_cursor(session_id: str, after: int | None) -> int:
    """
    `start_cursor`, without a query for a stream that starts at the head of a
    session this process already follows: a socket connecting to a busy
    dashboard's session costs no read. (The head may trail a commit whose
    notification was lost, by one re-check at most; the subscriber then gets
    that event too, and nothing is lost.)
    """
    if after is None:
        head = hub().known_head(session_id)
        if head is not None:
            return head
    return int(await _astart_cursor(session_id, after))


def _page_read(session_id: str, query: FeedQuery) -> tuple[Hashable, Callable[[], Any]]:
    """The key under which local readers share a page read, and the read."""
    if query.wait_seconds:
        # Keyed without the wait, so that long-polls and streams share reads.
        query = replace(query, wait_seconds=0.0)
    return (session_id, query), partial(aread_page, session_id, query)


async def _read_watched(watch: SessionWatch, session_id: str, query: FeedQuery) -> Page:
    """`read_page`, shared with the session's other local readers of the same page."""
    page: Page = await asyncio.shield(watch.shared(*_page_read(session_id, query)))
    return page


def _expect_read(
    watch: SessionWatch, news: asyncio.Future[bool], session_id: str, query: FeedQuery
) -> None:
    """Have the wake-up that resolves `news` start this waiter's next read first."""
    watch.expect(news, *_page_read(session_id, query))


async def _read_unless_known(watch: SessionWatch, session_id: str, query: FeedQuery) -> Page:
    """The page after the cursor; empty without a query when the process knows it is."""
    if watch.knows_nothing_after(query.after):
        assert query.after is not None
        return Page(events=[], next_cursor=query.after, has_more=False, last_sequence=query.after)
    return await _read_watched(watch, session_id, query)


@lru_cache(maxsize=1024)
def _timed_out_at(cursor: int) -> Page:
    """
    The empty, timed-out page at `cursor`, one object for all: long-polls
    timing out together at a session's head then share its encoding
    (`Page.encoded`) rather than each encode its own copy.
    """
    return Page(events=[], next_cursor=cursor, has_more=False, last_sequence=cursor, timed_out=True)


def _timed_out(page: Page) -> Page:
    if page.events or page.has_more:
        return replace(page, timed_out=True)
    # Nothing after the cursor: it is the head, as far as this read knew.
    return _timed_out_at(page.next_cursor)


def _expire(on_timeout: Callable[[Page], None], last: list[Page]) -> None:
    # A deadline that passes while the read is in flight is left to the
    # waiter's task, which sees it once the read is done.
    if last:
        on_timeout(_timed_out(last[-1]))


async def poll(
    session_id: str,
    query: FeedQuery,
    since: float | None = None,
    on_timeout: Callable[[Page], None] | None = None,
) -> Page:
    """
    The next page after the cursor. With `wait_seconds`, a page with nothing
    to return waits for a matching event (woken by the process's hub, see
    `artifacts.wakeups`) and returns at the deadline with `timed_out`, or at
    once when the process shuts down. The deadline counts from `since` (loop
    time; when the request arrived), else from now. A waiter at the session's
    head as this process knows it neither reads before waiting nor at its
    deadline. `on_timeout(page)` is called at the deadline with the
    timed-out page that `poll` then returns, from the callback that expires
    every waiter due at that moment, before their tasks resume: ten thousand
    long-polls falling due together can have their answers sent from there,
    each as soon as its turn comes.
    """
    validate_session_id(session_id)
    loop = asyncio.get_running_loop()
    deadline = (loop.time() if since is None else since) + query.wait_seconds
    current = hub()
    if query.wait_seconds <= 0 or not current.is_watching(session_id):
        # Often there is something to return at once: answer without joining
        # the session's group.
        page: Page = await asyncio.shield(
            current.shared_read((session_id, query), partial(aread_page, session_id, query))
        )
        if page.events or page.has_more or query.wait_seconds <= 0:
            return page
        if current.draining:
            return _timed_out(page)
        query = replace(query, after=page.next_cursor)
    async with current.watch(session_id) as watch:
        while True:
            # Taken before the read: a commit during the read resolves it.
            # The page to time out with, once this round's read has found it.
            last: list[Page] = []
            news = watch.news(
                deadline, None if on_timeout is None else partial(_expire, on_timeout, last)
            )
            try:
                page = await _read_unless_known(watch, session_id, query)
                last.append(page)
                query = replace(query, after=page.next_cursor)
                if page.events or page.has_more:
                    return page
                if current.draining:
                    return _timed_out(page)
                _expect_read(watch, news, session_id, query)
                if not await news:
                    return _timed_out(page)
            finally:
                news.cancel()


async def follow(
    session_id: str, query: FeedQuery, idle_seconds: float | None = None
) -> AsyncGenerator[Page | None, None]:
    """
    Every page after `query.after` (which must be a checked cursor, see
    `start_cursor`), then each new one as it commits. Pages may be
    empty when only the cursor moved. Yields None after `idle_seconds`
    without news. Use it inside `contextlib.aclosing`. Ends when the process
    shuts down (see `EventHub.drain`), after a last read.
    """
    loop = asyncio.get_running_loop()
    current = hub()
    async with current.watch(session_id) as watch:
        while True:
            news = watch.news(None if idle_seconds is None else loop.time() + idle_seconds)
            try:
                page = await _read_unless_known(watch, session_id, query)
                if page.events or page.next_cursor != query.after:
                    yield page
                    # A new query only when the cursor moved: ten thousand
                    # subscribers woken together each pass here.
                    query = replace(query, after=page.next_cursor)
                if page.has_more:
                    continue
                if current.draining:
                    return
                _expect_read(watch, news, session_id, query)
                if not await news:
                    yield None
            finally:
                news.cancel()


SendPage = Callable[[Page], Coroutine[Any, Any, None]]


class _Subscriber:
    """A `push` subscriber's state, shared between its task and its group."""

    __slots__ = ("send", "query", "wake", "group", "sending", "failure")

    def __init__(self, send: SendPage, query: FeedQuery) -> None:
        self.send = send
        self.query = query
        self.wake: asyncio.Future[bool] | None = None
        self.group: _Pushed | None = None
        # A send the group began that did not finish at once, and an error a
        # send raised: the subscriber's task takes them over (`resume`).
        self.sending: asyncio.Task[None] | None = None
        self.failure: Exception | None = None

    def deliver(self, page: Page) -> bool:
        """Send `page` now; False if the subscriber's task must take over."""
        try:
            self.sending = eager.start(self.send(page))
        except Exception as exc:
            self.failure = exc
            return False
        return self.sending is None

    def hand_back(self) -> None:
        """Let the subscriber's task go on from its cursor."""
        self.group = None
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(True)

    async def resume(self) -> FeedQuery:
        """In the subscriber's task: finish what the group began; the cursor to read from."""
        sending, self.sending = self.sending, None
        if sending is not None:
            await sending
        failure, self.failure = self.failure, None
        if failure is not None:
            raise failure
        return self.query

    def leave(self) -> None:
        if self.group is not None:
            self.group.members.discard(self)
            self.group = None
        if self.sending is not None:
            # Stopped before it wrote anything (the socket was not writable).
            self.sending.cancel()


class _Pushed:
    """
    The `push` subscribers of one session at one cursor and filters. The
    wake-up that moves the session's head reads their page once and sends it
    to each of them from one callback (`woken`); they then wait together at
    the next cursor.
    """

    def __init__(self, watch: SessionWatch, session_id: str, query: FeedQuery) -> None:
        self.watch = watch
        self.session_id = session_id
        self.query = query
        self.members: set[_Subscriber] = set()

    def __len__(self) -> int:
        return len(self.members)

    def woken(self, read: asyncio.Future[Any] | None) -> None:
        members = [m for m in self.members if m.wake is not None and not m.wake.done()]
        self.members.clear()
        try:
            self._serve(read, members)
        except Exception:
            # A bug must not strand the subscribers: their tasks read again.
            logger.exception("Pushing artifact events failed")
            for member in members:
                member.hand_back()

    def _serve(self, read: asyncio.Future[Any] | None, members: list[_Subscriber]) -> None:
        if read is None or read.cancelled() or read.exception() is not None:
            # Nothing to send (a shutdown or purge), or the read failed:
            # each subscriber's task reads again and reports what it finds.
            for member in members:
                member.hand_back()
            return
        page: Page = read.result()
        query = self.query
        if page.events or page.next_cursor != query.after:
            query = replace(query, after=page.next_cursor)
            for member in members:
                member.query = query
            if page.events:
                members = self._send(page, members)
            if page.has_more:
                for member in members:
                    member.hand_back()
                return
        _wait_together(self.watch, self.session_id, query, members)

    def _send(self, page: Page, members: list[_Subscriber]) -> list[_Subscriber]:
        """Send the page to every member; those whose send did not finish go back to their task."""
        kept = []
        for member in members:
            if member.deliver(page):
                kept.append(member)
            else:
                member.hand_back()
        return kept


def _wait_together(
    watch: SessionWatch, session_id: str, query: FeedQuery, members: list[_Subscriber]
) -> None:
    """
    Have `members`, whose cursor is `query.after`, served by the session's
    next news: read now if the process already knows of events after the
    cursor (a commit came while their last page was read), else wait in the
    group of that cursor for the next wake-up.
    """
    if not members:
        return
    if watch.gone or hub().draining:
        for member in members:
            member.hand_back()
        return
    key, read = _page_read(session_id, query)
    if query.after is not None and query.after < watch.head:
        group = _Pushed(watch, session_id, query)
        watch.shared(key, read).add_done_callback(group.woken)
    else:
        group = watch.join(key, read, partial(_Pushed, watch, session_id, query))
    group.members.update(members)
    for member in members:
        member.group = group


async def push(session_id: str, query: FeedQuery, send: SendPage) -> None:
    """
    `follow` for a subscriber whose pages go to `send(page)` (pages with
    events only), for as long as the subscription lasts. Once the subscriber
    has caught up, it waits in the group of the subscribers at its cursor and
    filters (`_Pushed`): a commit then costs one read and one callback that
    sends the page to each of them, not a resumed task per subscriber. Its
    own task takes over again, from the cursor the group left it at, when a
    page has more after it, when a send could not finish at once (a slow
    client) or failed, and on a wake-up without news (a purge: the read
    that follows raises `SessionNotFound`; a shutdown: `push` returns).
    """
    current = hub()
    subscriber = _Subscriber(send, query)
    async with current.watch(session_id) as watch:
        try:
            while True:
                # Taken before the read: a commit during the read resolves it.
                news = watch.news()
                try:
                    page = await _read_unless_known(watch, session_id, query)
                    if page.events:
                        await send(page)
                    if page.next_cursor != query.after:
                        query = replace(query, after=page.next_cursor)
                    if page.has_more:
                        continue
                    if current.draining:
                        return
                    if not watch.withdraw(news):
                        continue
                    subscriber.wake = news
                    subscriber.query = query
                    _wait_together(watch, session_id, query, [subscriber])
                    await news
                    query = await subscriber.resume()
                finally:
                    news.cancel()
        finally:
            subscriber.leave()
