"""
ASGI entry point. HTTP goes through the artifact event feed (served without
a thread per waiting request) and the streaming upload middleware, then
Django; WebSockets go through Channels' auth and origin checks.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "macproject.settings")
django_asgi_app = get_asgi_application()
if settings.MAC_SERVE_STATIC:
    # The admin's (and later the dashboard's) assets, straight from the apps,
    # so the embedded default needs no collectstatic and no CDN. Behind a
    # proxy, set MAC_SERVE_STATIC=0 and serve STATIC_ROOT from there.
    django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)

# Imported after Django is set up: they load models.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from artifacts.asgi import EventFeedMiddleware, ShutdownMiddleware  # noqa: E402
from artifacts.routing import websocket_urlpatterns  # noqa: E402
from attachments.asgi import JSONServerErrorMiddleware, StreamingUploadMiddleware  # noqa: E402
from attachments.buffering import guard_daphne  # noqa: E402
from attachments.conf import conf as attachments_conf  # noqa: E402
from attachments.reconcile import reconcile_in_background  # noqa: E402
from attachments.serving import FileBodyMiddleware  # noqa: E402

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
                EventFeedMiddleware(StreamingUploadMiddleware(FileBodyMiddleware(django_asgi_app)))
            ),
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
            ),
        }
    )
)
