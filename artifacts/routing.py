from __future__ import annotations

from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws", consumers.SessionConsumer.as_asgi()),
    path("ws/sessions/<str:session_id>/artifacts", consumers.ArtifactsConsumer.as_asgi()),
]
