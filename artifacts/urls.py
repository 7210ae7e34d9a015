from __future__ import annotations

from django.urls import path

from . import views

app_name = "artifacts"

urlpatterns = [
    path(
        "sessions/<str:session_id>/artifact-events",
        views.artifact_events,
        name="events",
    ),
    path(
        "sessions/<str:session_id>/artifact-events/stream",
        views.artifact_event_stream,
        name="event-stream",
    ),
]
