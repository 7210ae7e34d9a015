"""
Django under ASGI (`macproject.asgi.DjangoHandler`): a request for a sync
view runs the middleware as sync code, in the same hop to a thread as the
view, instead of one hop per middleware hook; a request for an async view
(the event feed's) keeps Django's async chain, holding no thread while it
waits. Both get every middleware's work (the security headers here).
"""

from __future__ import annotations

import pytest
from asgiref.sync import iscoroutinefunction
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.test import override_settings
from django.utils.deprecation import MiddlewareMixin

from macproject.asgi import DjangoHandler
from tests.scopes import http_scope

pytestmark = pytest.mark.django_db(transaction=True)

modes: list[str] = []


class RecordMode(MiddlewareMixin):
    """Records whether it was built into the async chain or the sync one."""

    def process_request(self, request):
        modes.append("async" if iscoroutinefunction(self) else "sync")


async def status_of(path: str) -> tuple[int, dict[bytes, bytes]]:
    communicator = ApplicationCommunicator(DjangoHandler(), http_scope(path))
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(10)
    while (await communicator.receive_output(10)).get("more_body"):
        pass
    await communicator.wait(10)
    return start["status"], {name.lower(): value for name, value in start["headers"]}


@pytest.fixture(autouse=True)
def recording():
    modes.clear()
    with override_settings(MIDDLEWARE=[*settings.MIDDLEWARE, f"{__name__}.RecordMode"]):
        yield


async def test_a_sync_view_runs_its_middleware_as_sync_code():
    status, headers = await status_of("/api/limits")
    assert status == 200 and modes == ["sync"]
    assert headers[b"x-frame-options"] == b"DENY"


async def test_an_async_view_keeps_the_async_chain():
    status, headers = await status_of("/api/sessions/no-such-session/artifact-events")
    assert status == 404 and modes == ["async"]
    assert headers[b"x-content-type-options"] == b"nosniff"


async def test_a_path_no_view_serves_is_answered_by_the_sync_chain():
    status, _ = await status_of("/no/such/page")
    assert status == 404 and modes == ["sync"]
