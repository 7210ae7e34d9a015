"""
The session dashboard: one page, plain JavaScript modules and CSS shipped as
the app's static files, talking to the public API like any other client.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_safe

# Scripts and styles come from this origin only, and nothing may frame the
# page: whatever an artifact holds, it has no way to run here.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def _url_or_empty(name: str) -> str:
    try:
        return reverse(name)
    except NoReverseMatch:
        return ""


def api_root() -> str:
    """Where the host project mounted the apps' API, e.g. `/api/`."""
    return reverse("attachments:sessions").removesuffix("sessions")


@require_safe
@ensure_csrf_cookie
def dashboard(request: HttpRequest) -> HttpResponse:
    """The dashboard page; everything else happens in the browser."""
    response = render(
        request,
        "artifacts/dashboard.html",
        {"api_root": api_root(), "admin_url": _url_or_empty("admin:index")},
    )
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Referrer-Policy"] = "no-referrer"
    return response
