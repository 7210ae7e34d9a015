"""Live clients authorised in batches: each gets its own verdict, a burst costs a few queries."""

from __future__ import annotations

import asyncio

import pytest
from django.utils import timezone

from artifacts.authorization import MAX_BATCH, authorize
from attachments.access import authorize_scopes_sync
from attachments.exceptions import InvalidSessionId, SessionNotFound
from attachments.models import Session
from attachments.sessions import create_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.access_policy("token")]


def scope_for(session_id: str, token: str | None = None) -> dict:
    headers = [(b"host", b"localhost")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": f"/api/sessions/{session_id}/artifact-events",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }


@pytest.fixture
def sessions():
    return [create_session() for _ in range(3)]


def mixed_requests(sessions):
    """(scope, session id, what the caller must get) for callers right and wrong."""
    first, second, third = sessions
    return [
        (scope_for(first.session_id, first.token), first.session_id, first.session_id),
        (scope_for(second.session_id, second.token), second.session_id, second.session_id),
        # Another session's token, no token, an unknown and a malformed id.
        (scope_for(third.session_id, first.token), third.session_id, SessionNotFound),
        (scope_for(third.session_id), third.session_id, SessionNotFound),
        (scope_for("no-such-session", first.token), "no-such-session", SessionNotFound),
        (scope_for("bad id!", first.token), "bad id!", InvalidSessionId),
        (scope_for(third.session_id, third.token), third.session_id, third.session_id),
    ]


def check(outcome, expected):
    if isinstance(expected, str):
        assert not isinstance(outcome, BaseException), outcome
        assert outcome.session_id == expected
    else:
        assert isinstance(outcome, expected), outcome


def test_each_request_gets_its_own_verdict_from_one_query(sessions, django_assert_num_queries):
    requests = mixed_requests(sessions) * 20
    with django_assert_num_queries(1):
        outcomes = authorize_scopes_sync([(scope, sid) for scope, sid, _ in requests])
    assert len(outcomes) == len(requests)
    for outcome, (_scope, _sid, expected) in zip(outcomes, requests, strict=True):
        check(outcome, expected)


def test_callers_of_one_session_get_their_own_verdicts_from_one_query(
    sessions, django_assert_num_queries
):
    first, second, _third = sessions
    requests = [
        (scope_for(first.session_id, first.token), first.session_id, first.session_id),
        (scope_for(first.session_id, second.token), first.session_id, SessionNotFound),
        (scope_for(first.session_id), first.session_id, SessionNotFound),
        (scope_for("bad id!", first.token), "bad id!", InvalidSessionId),
    ] * 10
    with django_assert_num_queries(1):
        outcomes = authorize_scopes_sync([(scope, sid) for scope, sid, _ in requests])
    for outcome, (_scope, _sid, expected) in zip(outcomes, requests, strict=True):
        check(outcome, expected)


def test_a_purged_session_is_not_reached_with_its_token(sessions):
    first = sessions[0]
    Session.objects.filter(pk=first.pk).update(purged_at=timezone.now())
    scope = scope_for(first.session_id, first.token)
    [outcome] = authorize_scopes_sync([(scope, first.session_id)])
    assert isinstance(outcome, SessionNotFound)


def test_callers_arriving_together_each_get_their_own_answer(sessions):
    requests = mixed_requests(sessions) * (MAX_BATCH // 2)  # several batches

    async def run():
        return await asyncio.gather(
            *(authorize(scope, sid) for scope, sid, _ in requests), return_exceptions=True
        )

    outcomes = asyncio.run(run())
    for outcome, (_scope, _sid, expected) in zip(outcomes, requests, strict=True):
        check(outcome, expected)


def test_a_caller_that_leaves_does_not_disturb_the_others(sessions):
    first = sessions[0]
    scope = scope_for(first.session_id, first.token)

    async def run():
        leaving = [asyncio.ensure_future(authorize(scope, first.session_id)) for _ in range(10)]
        staying = [asyncio.ensure_future(authorize(scope, first.session_id)) for _ in range(10)]
        await asyncio.sleep(0)
        for task in leaving:
            task.cancel()
        results = await asyncio.gather(*staying)
        # And the next caller is served as usual.
        results.append(await authorize(scope, first.session_id))
        return leaving, results

    leaving, results = asyncio.run(run())
    assert all(task.cancelled() for task in leaving)
    assert [session.session_id for session in results] == [first.session_id] * 11
