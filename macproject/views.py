"""JSON answers for errors raised outside any API view (unknown URLs, crashes)."""

from __future__ import annotations

import sys

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

from attachments.exceptions import server_error_response


def _wants_json(request: HttpRequest) -> bool:
    path = request.path
    return (
        path == "/api"
        or path.startswith("/api/")
        or "application/json" in request.headers.get("Accept", "")
    )


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": "No such endpoint.", "code": "not_found"}, status=404)
    return defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": "Bad request.", "code": "bad_request"}, status=400)
    return defaults.bad_request(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    # Django calls this while handling the exception, so it is still at hand:
    # a full disk or a database outage gets its own status (507, 503).
    status, payload, headers = server_error_response(sys.exc_info()[1] or Exception())
    if _wants_json(request) or status != 500:
        response = JsonResponse(payload, status=status)
        for name, value in headers:
            response[name.decode()] = value.decode()
        return response
    return defaults.server_error(request)
