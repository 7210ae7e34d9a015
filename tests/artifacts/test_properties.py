"""
Property: a reader that always passes `after=next_cursor` sees every matching
event exactly once, in order, whatever the interleaving of changes and polls,
the filters, the page size and the scan bound; `next_cursor` never goes back.
With retention, a reader either sees everything or is told (410
cursor_expired) exactly what it missed: never a silent gap.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artifacts.exceptions import CursorExpired
from artifacts.feed import FeedQuery, parse_query, read_page
from attachments.models import Attachment

from .builders import add_attachment, new_session

pytestmark = pytest.mark.django_db

FILES = [
    ("chart.png", "image/png"),
    ("photo.jpeg", "image/jpeg"),
    ("data.CSV", "text/csv"),
    ("notes.txt", "text/plain"),
    ("dump.tar.gz", "application/gzip"),
    ("result.json", "application/json"),
    ("Makefile", "text/plain"),
]
MIME_FILTERS = ["image/", "image/png", "text/plain", "application/", "text/*", "video/mp4"]
EXT_FILTERS = ["png", ".csv", "txt", "tar.gz", "gz", "JSON", "md"]

_ids = itertools.count()

create = st.tuples(st.just("create"), st.sampled_from(FILES), st.integers(0, 3000))
update = st.tuples(st.just("update"), st.integers(0, 100), st.integers(0, 3000))
delete = st.tuples(st.just("delete"), st.integers(0, 100), st.sampled_from(["purge", "row"]))
poll = st.tuples(st.just("poll"), st.integers(1, 6))
operations = st.lists(
    st.one_of(create, create, create, update, delete, poll, poll), min_size=8, max_size=60
)
filters = st.fixed_dictionaries(
    {},
    optional={
        "include_mime": st.lists(st.sampled_from(MIME_FILTERS), min_size=1, max_size=3).map(
            ",".join
        ),
        "include_ext": st.lists(st.sampled_from(EXT_FILTERS), min_size=1, max_size=3).map(",".join),
        "max_size": st.integers(0, 3000).map(str),
    },
)


@dataclass(frozen=True)
class Expected:
    sequence: int
    change_type: str
    name: str
    mime: str
    size: int


def matches(event: Expected, params: dict[str, str]) -> bool:
    """An independent statement of what the filters mean."""
    if "include_mime" in params:
        wanted = [m.strip().lower() for m in params["include_mime"].split(",")]
        if not any(
            event.mime.startswith(w.rstrip("*")) if w.endswith(("/", "/*")) else event.mime == w
            for w in wanted
        ):
            return False
    if "include_ext" in params:
        wanted = [e.strip().lower().lstrip(".") for e in params["include_ext"].split(",")]
        if not any(event.name.lower().endswith("." + e) for e in wanted):
            return False
    if "max_size" in params and event.size > int(params["max_size"]):
        return False
    return True


class World:
    """Applies operations to a fresh session and keeps the events they must produce."""

    def __init__(self) -> None:
        self.session = new_session(f"prop-{next(_ids)}")
        self.live: list[Attachment] = []
        self.expected: list[Expected] = []

    def _expect(self, change_type: str, attachment: Attachment) -> None:
        self.expected.append(
            Expected(
                len(self.expected) + 1,
                change_type,
                attachment.name,
                attachment.mime,
                attachment.size,
            )
        )

    def apply(self, operation: tuple) -> None:
        kind = operation[0]
        if kind == "create":
            (name, mime), size = operation[1], operation[2]
            attachment = add_attachment(self.session, name, mime=mime, size=size)
            self.live.append(attachment)
            self._expect("created", attachment)
        elif kind == "update" and self.live:
            attachment = self.live[operation[1] % len(self.live)]
            attachment.size = operation[2]
            attachment.sha256 = f"{len(self.expected):064x}"
            attachment.save()
            self._expect("updated", attachment)
        elif kind == "delete" and self.live:
            attachment = self.live.pop(operation[1] % len(self.live))
            if operation[2] == "purge":
                attachment.purged_at = timezone.now()
                attachment.save(update_fields=["purged_at"])
            else:
                attachment.delete()
            self._expect("deleted", attachment)


class Reader:
    def __init__(self, session_id: str, params: dict[str, str]) -> None:
        self.session_id = session_id
        self.filters = parse_query(params).filters
        self.cursor = 0
        self.seen: list[Expected] = []
        self.missed: list[range] = []

    def poll(self, limit: int) -> bool:
        """One page; True if it said there is more."""
        try:
            page = read_page(
                self.session_id, FeedQuery(after=self.cursor, limit=limit, filters=self.filters)
            )
        except CursorExpired as exc:
            # The client relists; it knows exactly which sequences it lost.
            assert exc.resume_after > self.cursor
            self.missed.append(range(self.cursor + 1, exc.resume_after + 1))
            self.cursor = exc.resume_after
            return True
        assert page.next_cursor >= self.cursor, "next_cursor went backwards"
        assert len(page.events) <= limit
        self.seen.extend(
            Expected(e["sequence"], e["change_type"], e["name"], e["mime"], e["size"])
            for e in page.events
        )
        self.cursor = page.next_cursor
        return page.has_more

    def drain(self) -> None:
        for _ in range(10_000):
            if not self.poll(6):
                return
        raise AssertionError("the reader never caught up")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=operations, params=filters, scan=st.sampled_from([1, 3, 10_000]))
def test_every_matching_event_exactly_once_in_order(operations, params, scan):
    with override_settings(ARTIFACTS_MAX_SCAN_EVENTS=scan, ARTIFACTS_MAX_PAGE_SIZE=6):
        world = World()
        reader = Reader(world.session.session_id, params)
        for operation in operations:
            if operation[0] == "poll":
                reader.poll(operation[1])
            else:
                world.apply(operation)
        reader.drain()
    assert reader.seen == [e for e in world.expected if matches(e, params)]
    assert reader.cursor == len(world.expected)
    assert reader.missed == []


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=operations, params=filters, retention=st.integers(1, 6))
def test_with_retention_a_reader_misses_nothing_silently(operations, params, retention):
    with override_settings(ARTIFACTS_EVENT_RETENTION=retention, ARTIFACTS_MAX_PAGE_SIZE=6):
        world = World()
        reader = Reader(world.session.session_id, params)
        for operation in operations:
            if operation[0] == "poll":
                reader.poll(operation[1])
            else:
                world.apply(operation)
        reader.drain()
    missed = {sequence for gap in reader.missed for sequence in gap}
    assert reader.seen == [
        e for e in world.expected if matches(e, params) and e.sequence not in missed
    ]
    seen = [e.sequence for e in reader.seen]
    assert seen == sorted(set(seen))
    assert reader.cursor == len(world.expected)
