"""
ASGI entry point. HTTP goes through the artifact event feed (served without
a thread per waiting request) and the streaming upload middleware, then
Django; WebSockets go through Channels' auth and origin checks.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "macproject.settings")
django_asgi_app = get_asgi_application()

# Imported after Django is set up: they load models.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from artifacts.asgi import EventFeedMiddleware  # noqa: E402
from artifacts.routing import websocket_urlpatterns  # noqa: E402
from attachments.asgi import StreamingUploadMiddleware  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": EventFeedMiddleware(StreamingUploadMiddleware(django_asgi_app)),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
