"""
ASGI entry point. HTTP goes through the artifact event feed (served without
a thread per waiting request) and the streaming upload middleware, then
Django; WebSockets go through Channels' origin check, and the consumers read
the caller's credentials themselves (see the WebSocket route below).
"""

from __future__ import annotations

import gc
import json
import os
from typing import Any

import django
from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.urls import re_path

from attachments.routes import route_of

# Collections of the youngest generation, then of the next, that trigger
# the next one up (Python's defaults: 700, 10, 10); see the end of the module.
GC_THRESHOLDS = (20_000, 10, 10)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "macproject.settings")
django.setup(set_prefix=False)


class DjangoHandler(ASGIHandler):  # type: ignore[misc]
    """
    Django's ASGI handler, except that a request for a sync view (all but
    the event feed's) runs the middleware and the view in one hop to a
    thread. Django runs each sync middleware's request and response hooks
    in a hop of its own under ASGI, a dozen per request here: 8-10 ms of
    CPU for a HEAD that costs 1.7 ms in one thread. Async views keep
    Django's async chain, holding no thread while they wait.
    """

    def __init__(self) -> None:
        super().__init__()
        self._sync_handler = BaseHandler()
        self._sync_handler.load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        route = route_of(request.path_info)  # None: answered by the sync chain's 404
        if route is not None and iscoroutinefunction(route.func):
            response: HttpResponseBase = await super().get_response_async(request)
        else:
            response = await sync_to_async(self._sync_handler.get_response)(request)
        return response


django_asgi_app = DjangoHandler()


class StaticFilesHandler(ASGIStaticFilesHandler):  # type: ignore[misc]
    """
    Django's, except that a path trying to leave the static roots
    (`/static/%2e%2e/...`) is a JSON 404: Django lets the
    SuspiciousFileOperation through, and the client got a 500.
    """

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        try:
            response: HttpResponseBase = await super().get_response_async(request)
        except SuspiciousOperation:
            return JsonResponse({"detail": "No such file.", "code": "not_found"}, status=404)
        return response


async def unknown_socket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """
    The WebSocket route of last resort: a path no consumer serves gets a JSON
    404 where the server lets the application answer the handshake (the
    `websocket.http.response` extension, as Uvicorn does), else a refusal
    (the server answers 403), instead of the router's ValueError and a 500.
    """
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps({"detail": "No such endpoint.", "code": "not_found"}).encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 404,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-content-type-options", b"nosniff"),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


if settings.MAC_SERVE_STATIC:
    # The admin's (and later the dashboard's) assets, straight from the apps,
    # so the embedded default needs no collectstatic and no CDN. Behind a
    # proxy, set MAC_SERVE_STATIC=0 and serve STATIC_ROOT from there.
    django_asgi_app = StaticFilesHandler(django_asgi_app)

# Imported after Django is set up: they load models.
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from artifacts.feed_asgi import EventFeedMiddleware, ShutdownMiddleware  # noqa: E402
from artifacts.routing import websocket_urlpatterns  # noqa: E402
from attachments.buffering import guard_daphne  # noqa: E402
from attachments.conf import conf as attachments_conf  # noqa: E402
from attachments.file_body_middleware import FileBodyMiddleware  # noqa: E402
from attachments.reconcile import reconcile_in_background  # noqa: E402
from attachments.uploads_asgi import (  # noqa: E402
    JSONServerErrorMiddleware,
    StreamingUploadMiddleware,
    UploadRequestHandler,
)

# Daphne reads (and Twisted parses) whole bodies before the application
# sees them: refuse over-long ones before that (attachments.buffering).
guard_daphne()

if attachments_conf.RECONCILE_AT_START:
    # What a crash of this or another worker left (attachments.reconcile);
    # safe beside workers that are serving.
    reconcile_in_background()

# Outermost: answers the lifespan, and drains live clients on shutdown.
application = ShutdownMiddleware(
    ProtocolTypeRouter(
        {
            "http": JSONServerErrorMiddleware(
                EventFeedMiddleware(
                    StreamingUploadMiddleware(
                        FileBodyMiddleware(django_asgi_app), upload_app=UploadRequestHandler()
                    )
                )
            ),
            # No AuthMiddlewareStack: the consumers read the signed-in user
            # from the session cookie with the rest of the caller's
            # credentials (`attachments.access.credentials_from_scope`), in
            # the batch of sockets connecting together
            # (`artifacts.authorization`). Channels' stack would read it
            # with a hop of its own for every connect, through the one
            # thread Django's sync code shares, and wrap every message the
            # socket sends to save a session that nothing here changes
            # (a tenth of the time a fan-out to 10,000 sockets took).
            "websocket": AllowedHostsOriginValidator(
                URLRouter([*websocket_urlpatterns, re_path(r"", unknown_socket)])
            ),
        }
    )
)

# The garbage collector's full passes scan every object the process holds.
# What the imports above built (Django, the URLconf, the apps) lives as
# long as the process: frozen, it is left out of every pass. And with ten
# thousand live clients each holding a few hundred objects, the default
# thresholds ran a full pass every few hundred arrivals during a burst,
# 0.15-0.45 s each with the event loop stopped (1.3 s of the 1.8 s it took
# to read 10,000 long-polls sent together, bench/live_clients.py); less
# frequent young collections make full passes rare while clients arrive.
gc.freeze()
gc.set_threshold(*GC_THRESHOLDS)
