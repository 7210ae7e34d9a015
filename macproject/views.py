"""JSON answers for errors raised outside any API view (unknown URLs, crashes)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults


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
    if _wants_json(request):
        return JsonResponse(
            {"detail": "The server failed to handle this request.", "code": "server_error"},
            status=500,
        )
    return defaults.server_error(request)
