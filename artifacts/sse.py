"""
The event feed as Server-Sent Events: one SSE message per event, its `id:`
the event's sequence, so a browser's `EventSource` resumes with
`Last-Event-ID` exactly where it stopped. When filters drop events, an
`id:`-only block moves the resume point past them without firing a message.
A worker that shuts down ends its streams with a `retry:` hint.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import replace
from functools import partial

from attachments.exceptions import ApiError, error_payload
from attachments.parameters import whole_number

from .conf import conf
from .exceptions import InvalidParameter
from .feed import FeedQuery, Page, astart_cursor, follow, parse_query

CONTENT_TYPE = "text/event-stream; charset=utf-8"
HEADERS = {
    "Cache-Control": "no-cache",
    # Proxies such as nginx would otherwise buffer the stream.
    "X-Accel-Buffering": "no",
}
KEEPALIVE = b": keep-alive\n\n"
# The last block of a stream that ends because the worker shuts down: a
# browser's EventSource reconnects after this many milliseconds (to another
# worker, or to this one restarted) and resumes with Last-Event-ID.
RECONNECT = b"retry: 1000\n\n"


def parse_stream_query(params: Mapping[str, object], last_event_id: str | None) -> FeedQuery:
    """The stream's query; a `Last-Event-ID` header (a reconnecting browser) wins over `after`."""
    query = parse_query(params, waiting=False)
    if last_event_id is not None and last_event_id.strip():
        try:
            after = whole_number(last_event_id)
        except ValueError:
            raise InvalidParameter(
                "Last-Event-ID", "Last-Event-ID must be a sequence number."
            ) from None
        query = replace(query, after=after)
    return query


async def open_stream(session_id: str, query: FeedQuery) -> AsyncGenerator[bytes, None]:
    """
    Check the session and cursor (raising `ApiError` before anything is sent,
    so the caller answers with a JSON error), then return the stream's body.
    """
    cursor = await astart_cursor(session_id, query.after)
    return _body(session_id, replace(query, after=cursor))


def _encode(page: Page, after: int | None) -> bytes:
    """A page as SSE blocks, for a reader whose cursor was `after`."""
    chunks = [f"id: {event['sequence']}\ndata: {json.dumps(event)}\n\n" for event in page.events]
    last_sent = page.events[-1]["sequence"] if page.events else after
    if page.next_cursor != last_sent:
        chunks.append(f"id: {page.next_cursor}\n\n")
    return "".join(chunks).encode()


async def _body(session_id: str, query: FeedQuery) -> AsyncGenerator[bytes, None]:
    yield f": artifact events of {session_id} after {query.after}\n\n".encode()
    pages = follow(session_id, query, idle_seconds=conf.SSE_KEEPALIVE_SECONDS)
    try:
        async with aclosing(pages):
            async for page in pages:
                if page is None:
                    yield KEEPALIVE
                    continue
                # Streams woken together share the page and so its encoding.
                yield page.encoded(("sse", query.after), partial(_encode, page, query.after))
                query = replace(query, after=page.next_cursor)
        yield RECONNECT
    except ApiError as exc:
        # The session was purged, or retention overtook a slow reader.
        yield f"event: error\ndata: {json.dumps(error_payload(exc))}\n\n".encode()
