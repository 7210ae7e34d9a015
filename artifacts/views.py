"""
The event feed's HTTP endpoints as Django views.

`respond_page` and `respond_stream` hold the whole of each endpoint; the
views here adapt them to Django, and `artifacts.feed_asgi.EventFeedMiddleware`
adapts them to bare ASGI so that, in the reference deployment, a waiting
request holds no thread. (Django's ASGI handler keeps a thread for every
request in flight, async views included, for its sync signal receivers and
middleware.)
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.views import APIView

from attachments.access import DjangoUserAuthentication, aauthorize_request
from attachments.exceptions import ApiError, error_payload
from attachments.openapi import ErrorSerializer

from . import sse
from .feed import Page, parse_query, poll
from .serializers import EventPageSerializer, FeedParameters, LongPollParameters

PAGE_HEADERS = {"Cache-Control": "no-store"}
JSON = "application/json"


Authorize = Callable[[], Awaitable[object]]


async def respond_page(
    session_id: str,
    params: Mapping[str, str],
    authorize: Authorize,
    since: float | None = None,
    on_timeout: Callable[[bytes], None] | None = None,
) -> tuple[int, bytes]:
    """
    Status and JSON body (encoded) of `GET .../artifact-events`. `authorize`
    applies the access policy (`attachments.access`) first; it raises the 404
    of an unknown session for a caller who may not read this one.
    `wait_seconds` counts from `since` (event-loop time the request arrived),
    else from now. Long-polls answered with the same page share one encoding
    of it (`Page.encoded`): ten thousand timing out together at the head of a
    session send the same bytes. `on_timeout(body)` gets the 200's body at
    the deadline, before this returns it (see `feed.poll`).
    """
    try:
        await authorize()
        page = await poll(
            session_id,
            parse_query(params),
            since,
            None if on_timeout is None else partial(_answer_timeout, on_timeout),
        )
    except ApiError as exc:
        return exc.status_code, encode_json(error_payload(exc))
    return 200, _page_body(page)


def _page_body(page: Page) -> bytes:
    return page.encoded("json", lambda: encode_json(page.to_json()))


def _answer_timeout(on_timeout: Callable[[bytes], None], page: Page) -> None:
    on_timeout(_page_body(page))


def encode_json(payload: dict[str, Any]) -> bytes:
    """The bytes `JsonResponse` would send for `payload`."""
    return json.dumps(payload, cls=DjangoJSONEncoder).encode()


def page_response(status: int, body: bytes) -> HttpResponse:
    """A Django response for what `respond_page` returns."""
    return HttpResponse(body, status=status, content_type=JSON, headers=PAGE_HEADERS)


async def respond_stream(
    session_id: str, params: Mapping[str, str], last_event_id: str | None, authorize: Authorize
) -> tuple[int, dict[str, Any] | AsyncGenerator[bytes, None]]:
    """Status, and a JSON error body or the body of `GET .../artifact-events/stream`."""
    try:
        await authorize()
        return 200, await sse.open_stream(session_id, sse.parse_stream_query(params, last_event_id))
    except ApiError as exc:
        return exc.status_code, error_payload(exc)


def _method_not_allowed(request: HttpRequest) -> HttpResponse:
    exc = exceptions.MethodNotAllowed(request.method or "")
    response = JsonResponse(error_payload(exc), status=exc.status_code)
    response["Allow"] = "GET"
    return response


# The views are plain async functions (DRF views hold a thread), so
# drf-spectacular, which only reads DRF views, is shown an APIView that
# carries their OpenAPI description instead: it looks for one in the
# callback's `cls` and `initkwargs`, which `as_view()` would set. Requests
# never reach these classes.
class _Described(APIView):
    authentication_classes = [DjangoUserAuthentication]
    permission_classes: list[Any] = []


FEED_ERRORS = {
    status: OpenApiResponse(ErrorSerializer, description=description)
    for status, description in (
        (400, "A bad parameter (named in `parameter`) or session id."),
        (404, "No such session, or one the caller may not reach."),
        (405, "Only GET."),
        (410, "cursor_ahead or cursor_expired, with `resume_after`."),
    )
}


class _EventPageOperation(_Described):
    @extend_schema(
        operation_id="artifact_events_page",
        summary="A page of the session's artifact events after a cursor (long-poll).",
        tags=["artifact-events"],
        parameters=[LongPollParameters],
        responses={200: EventPageSerializer, **FEED_ERRORS},
    )
    def get(self, request: Any, session_id: str) -> None:  # pragma: no cover
        raise NotImplementedError


class _EventStreamOperation(_Described):
    @extend_schema(
        operation_id="artifact_events_stream",
        summary="The same events as Server-Sent Events; resume with Last-Event-ID.",
        tags=["artifact-events"],
        parameters=[FeedParameters],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                OpenApiTypes.STR,
                description=(
                    "One `id:` (the sequence) and `data:` (an ArtifactEvent) per event. "
                    "An `id:`-only block moves the resume point past events the filters "
                    "dropped; it is no event (clients that yield it, with empty data, "
                    "skip it but keep its id)."
                ),
            ),
            **FEED_ERRORS,
        },
    )
    def get(self, request: Any, session_id: str) -> None:  # pragma: no cover
        raise NotImplementedError


def _described_by(operation: type[APIView]) -> Callable[[Any], Any]:
    def mark(view: Any) -> Any:
        view.cls = operation
        view.initkwargs = {}
        return view

    return mark


# These views only read. Exempting them from CSRF lets other methods get the
# JSON 405 below rather than the CSRF failure page.
@_described_by(_EventPageOperation)
@csrf_exempt
async def artifact_events(request: HttpRequest, session_id: str) -> HttpResponse:
    """
    A page of the session's artifact events after `after`, waiting up to
    `wait_seconds` for one; see DESIGN.md "Artifact events".
    """
    if request.method != "GET":
        return _method_not_allowed(request)
    status, body = await respond_page(
        session_id, request.GET.dict(), lambda: aauthorize_request(request, session_id)
    )
    return page_response(status, body)


@_described_by(_EventStreamOperation)
@csrf_exempt
async def artifact_event_stream(request: HttpRequest, session_id: str) -> HttpResponseBase:
    """The session's artifact events as Server-Sent Events, resumable with `Last-Event-ID`."""
    if request.method != "GET":
        return _method_not_allowed(request)
    status, body = await respond_stream(
        session_id,
        request.GET.dict(),
        request.headers.get("Last-Event-ID"),
        lambda: aauthorize_request(request, session_id),
    )
    if isinstance(body, dict):
        return JsonResponse(body, status=status, headers=PAGE_HEADERS)
    return StreamingHttpResponse(body, content_type=sse.CONTENT_TYPE, headers=sse.HEADERS)
