"""
The response headers of the ASGI fast paths: the event feed's pages and
streams (`artifacts.feed_asgi`), an upload's 201 and a tus PATCH's 204
(`attachments.uploads_asgi`).

Every other response gets its security and CORS headers from Django's
middleware, configured by the project's settings (`MIDDLEWARE`,
`SECURE_*`, `X_FRAME_OPTIONS`, `CORS_*`). The fast paths answer without
that chain, so rather than restate the policy they run the same middleware
classes, in `MIDDLEWARE`'s order, over a Django request and response of
their own: whatever changes in the settings changes on every path at once.

Only the middleware named by `ATTACHMENTS_FAST_PATH_MIDDLEWARE` (and present
in `MIDDLEWARE`) runs: middleware that only reads the request and sets
headers, with no I/O, so it may run on the event loop without a thread.
Sessions, CSRF, authentication and messages concern nothing these paths
answer: they authorise by token, JWT or the session cookie themselves, CSRF
included (`attachments.access`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.utils.module_loading import import_string

from .conf import conf

Handler = Callable[[HttpRequest], HttpResponseBase]

# The attribute under which `through_middleware` hands the response to the
# innermost handler of the shared chain.
_RESPONSE = "_fast_path_response"
# The middleware chain, built once as Django's handler builds its own: ten
# thousand long-polls answered together must not each import and construct
# every middleware (their `__init__` reads settings). Dropped on any
# settings change (connected in `attachments.apps`), since middleware such as
# SecurityMiddleware reads its settings when it is constructed.
_chain: Handler | None = None


def fast_path_middleware() -> list[str]:
    """The dotted paths that run, in the order Django runs them."""
    wanted = set(conf.FAST_PATH_MIDDLEWARE)
    return [path for path in settings.MIDDLEWARE if path in wanted]


def _carried_response(request: HttpRequest) -> HttpResponseBase:
    response: HttpResponseBase = getattr(request, _RESPONSE)
    return response


def _middleware_chain() -> Handler:
    global _chain
    if _chain is None:
        handler: Handler = _carried_response
        for path in reversed(fast_path_middleware()):
            handler = import_string(path)(handler)
        _chain = handler
    return _chain


def forget_middleware(**kwargs: Any) -> None:
    """Build the middleware chain afresh at its next use (settings have changed)."""
    global _chain
    _chain = None


def through_middleware(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    """
    `response` as the middleware leaves it, for a request that it let
    through to the view: the same object with headers added, or (rarely)
    another response that replaces it.
    """
    setattr(request, _RESPONSE, response)
    try:
        return _middleware_chain()(request)
    finally:
        delattr(request, _RESPONSE)


def prepare_headers(
    request: HttpRequest, content_type: str, headers: Mapping[str, str]
) -> tuple[HttpResponseBase | None, list[tuple[bytes, bytes]]]:
    """
    Run the middleware once for a request whose answer is not ready yet:
    over an empty 200 response with `content_type` and `headers`. Returns
    the middleware's own answer, if it gives one before any view runs (a
    redirect to HTTPS under `SECURE_SSL_REDIRECT`, say), already through the
    rest of the middleware; else None and the headers (ASGI's form, no
    Content-Length) it left on the stand-in, for the 200 with a body sent
    later. This middleware sets its headers from the request alone
    (see `ATTACHMENTS_FAST_PATH_MIDDLEWARE`), so they are the same then as now.
    """
    stand_in = HttpResponse(content_type=content_type, headers=headers)
    answer = through_middleware(request, stand_in)
    if answer is not stand_in:
        return answer, []
    return None, [header for header in asgi_headers(stand_in) if header[0] != b"content-length"]


def asgi_headers(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    """A response's headers and cookies as ASGI sends them: names in lower case."""
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in response.items()
    ]
    for cookie in response.cookies.values():
        headers.append((b"set-cookie", cookie.output(header="").encode("ascii").strip()))
    return headers


def describe(response: HttpResponseBase) -> dict[str, Any]:
    """The `http.response.start` message for a response."""
    return {
        "type": "http.response.start",
        "status": response.status_code,
        "headers": asgi_headers(response),
    }
