"""Cursor pages: filters, limits, the scan bound, retention and cursor errors."""

from __future__ import annotations

import pytest
from django.test import override_settings

from artifacts.exceptions import CursorAhead, CursorExpired, InvalidParameter
from artifacts.feed import FeedQuery, parse_query, read_page, start_cursor
from artifacts.models import EventStream
from attachments.exceptions import InvalidSessionId, SessionNotFound
from attachments.sessions import purge_session

from .builders import add_attachment, new_session, sequences

pytestmark = pytest.mark.django_db

FILES = [
    ("chart.png", "image/png", 500),
    ("photo.JPG", "image/jpeg", 5_000),
    ("result.json", "application/json", 50),
    ("notes.txt", "text/plain", 10),
    ("backup.tar.gz", "application/gzip", 90_000),
    ("README", "text/plain", 5),
]


def build_session():
    session = new_session("feed")
    for name, mime, size in FILES:
        add_attachment(session, name, mime=mime, size=size)
    return session


@pytest.fixture
def session():
    return build_session()


def names(page) -> list[str]:
    return [event["name"] for event in page.events]


def page(**params):
    return read_page("feed", parse_query({k: str(v) for k, v in params.items()}))


def test_without_a_cursor_a_page_starts_at_the_first_event(session):
    result = page()
    assert sequences(result.events) == [1, 2, 3, 4, 5, 6]
    assert (result.next_cursor, result.has_more, result.timed_out) == (6, False, False)


def test_after_is_exclusive(session):
    assert sequences(page(after=4).events) == [5, 6]
    result = page(after=6)
    assert (result.events, result.next_cursor, result.has_more) == ([], 6, False)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"include_mime": "image/png"}, ["chart.png"]),
        ({"include_mime": "image/"}, ["chart.png", "photo.JPG"]),
        ({"include_mime": "image/*"}, ["chart.png", "photo.JPG"]),
        ({"include_mime": "IMAGE/JPEG, text/plain"}, ["photo.JPG", "notes.txt", "README"]),
        ({"include_ext": "png"}, ["chart.png"]),
        ({"include_ext": ".jpg,json"}, ["photo.JPG", "result.json"]),
        ({"include_ext": "gz"}, ["backup.tar.gz"]),
        ({"include_ext": "tar.gz"}, ["backup.tar.gz"]),
        ({"include_ext": "md"}, []),
        ({"max_size": 50}, ["result.json", "notes.txt", "README"]),
        ({"max_size": 0}, []),
        ({"include_mime": "image/", "max_size": 1000}, ["chart.png"]),
        ({"include_mime": "text/", "include_ext": "txt"}, ["notes.txt"]),
        ({"include_mime": " , "}, [name for name, _, _ in FILES]),
    ],
)
def test_filters(session, params, expected):
    result = page(**params)
    assert names(result) == expected
    # The cursor moves past everything the filters dropped.
    assert (result.next_cursor, result.has_more) == (6, False)


def test_limit_pages_through_matching_events(session):
    first = page(include_mime="text/", limit=1)
    assert (names(first), first.next_cursor, first.has_more) == (["notes.txt"], 4, True)
    second = page(include_mime="text/", limit=1, after=first.next_cursor)
    assert (names(second), second.next_cursor, second.has_more) == (["README"], 6, False)


def test_a_full_last_page_has_no_more(session):
    result = page(limit=6)
    assert (len(result.events), result.next_cursor, result.has_more) == (6, 6, False)


def test_a_page_examines_a_bounded_number_of_events(session):
    with override_settings(ARTIFACTS_MAX_SCAN_EVENTS=2):
        first = page(include_ext="tar.gz")
        assert (first.events, first.next_cursor, first.has_more) == ([], 2, True)
        walked = [first]
        while walked[-1].has_more:
            walked.append(page(include_ext="tar.gz", after=walked[-1].next_cursor))
    assert [name for p in walked for name in names(p)] == ["backup.tar.gz"]
    assert [p.next_cursor for p in walked] == [2, 4, 6]


def test_a_cursor_beyond_the_last_event_is_ahead(session):
    with pytest.raises(CursorAhead) as caught:
        page(after=7)
    assert caught.value.status_code == 410
    assert caught.value.code == "cursor_ahead"
    assert caught.value.resume_after == 6
    assert caught.value.extra == {"resume_after": 6, "last_sequence": 6}


def test_a_session_without_events_starts_at_zero():
    new_session("empty")
    result = read_page("empty", FeedQuery())
    assert (result.events, result.next_cursor, result.has_more) == ([], 0, False)
    with pytest.raises(CursorAhead):
        read_page("empty", FeedQuery(after=1))


def test_retention_keeps_the_newest_events_and_expires_older_cursors(settings):
    settings.ARTIFACTS_EVENT_RETENTION = 3
    session = build_session()
    assert EventStream.objects.get(session=session).trimmed_through == 3
    assert sequences(page().events) == [4, 5, 6]
    assert sequences(page(after=3).events) == [4, 5, 6]
    with pytest.raises(CursorExpired) as caught:
        page(after=2)
    assert caught.value.code == "cursor_expired"
    assert caught.value.resume_after == 3
    add_attachment(session, "more.txt")
    with pytest.raises(CursorExpired):
        page(after=3)


def test_retention_applies_once_enabled(session):
    with override_settings(ARTIFACTS_EVENT_RETENTION=2):
        add_attachment(session, "seventh.txt")
        assert sequences(page().events) == [6, 7]


@pytest.mark.parametrize(
    ("session_id", "error"), [("bad.id", InvalidSessionId), ("missing", SessionNotFound)]
)
def test_unknown_or_malformed_sessions(session, session_id, error):
    with pytest.raises(error):
        read_page(session_id, FeedQuery())


def test_a_purged_session_is_not_found(session):
    purge_session(session)
    with pytest.raises(SessionNotFound):
        read_page("feed", FeedQuery())


def test_start_cursor_checks_the_cursor_or_starts_at_the_end(session):
    assert start_cursor("feed", None) == 6
    assert start_cursor("feed", 2) == 2
    with pytest.raises(CursorAhead):
        start_cursor("feed", 9)


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"after": "-1"}, "after"),
        ({"after": "one"}, "after"),
        ({"after": ""}, "after"),
        ({"after": "1.5"}, "after"),
        ({"after": "9" * 19}, "after"),
        ({"wait_seconds": "61"}, "wait_seconds"),
        ({"wait_seconds": "-1"}, "wait_seconds"),
        ({"wait_seconds": "nan"}, "wait_seconds"),
        ({"wait_seconds": "soon"}, "wait_seconds"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"max_size": "-5"}, "max_size"),
        ({"max_size": "1e3"}, "max_size"),
        ({"include_mime": "image"}, "include_mime"),
        ({"include_mime": "image/png;q=1"}, "include_mime"),
        ({"include_mime": ",".join(["a/b"] * 51)}, "include_mime"),
        ({"include_ext": "p n g"}, "include_ext"),
        ({"include_ext": "../x"}, "include_ext"),
        ({"include_ext": "x" * 33}, "include_ext"),
    ],
)
def test_bad_parameters_are_named(params, parameter):
    with pytest.raises(InvalidParameter) as caught:
        parse_query(params)
    assert caught.value.status_code == 400
    assert caught.value.code == "invalid_parameter"
    assert caught.value.extra == {"parameter": parameter}
    assert parameter in str(caught.value.detail)


def test_parameters_within_bounds_are_read():
    query = parse_query(
        {"after": "7", "wait_seconds": "2.5", "limit": "10", "max_size": "0", "include_ext": ".CSV"}
    )
    assert (query.after, query.wait_seconds, query.limit) == (7, 2.5, 10)
    assert (query.filters.exts, query.filters.max_size) == (("csv",), 0)


def test_streams_ignore_wait_seconds():
    assert parse_query({"wait_seconds": "999"}, waiting=False).wait_seconds == 0


def test_subscribe_messages_may_use_json_types():
    query = parse_query({"after": 3, "include_mime": ["image/", "text/plain"]}, waiting=False)
    assert query.after == 3
    assert query.filters.mime_prefixes == ("image/",)
    assert query.filters.mimes == ("text/plain",)
    with pytest.raises(InvalidParameter):
        parse_query({"after": True})


@override_settings(ARTIFACTS_MAX_PAGE_SIZE=5, ARTIFACTS_MAX_WAIT_SECONDS=2)
def test_bounds_follow_the_settings():
    assert parse_query({}).limit == 5
    with pytest.raises(InvalidParameter):
        parse_query({"limit": "6"})
    with pytest.raises(InvalidParameter):
        parse_query({"wait_seconds": "3"})
