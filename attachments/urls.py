from __future__ import annotations

from django.urls import path

from . import views

app_name = "attachments"

urlpatterns = [
    path("limits", views.LimitsView.as_view(), name="limits"),
    path("sessions", views.SessionListView.as_view(), name="sessions"),
    path("sessions/<str:session_id>", views.SessionDetailView.as_view(), name="session-detail"),
    path("uploads/<str:session_id>", views.UploadView.as_view(), name="uploads"),
    path("uploads/<str:session_id>/tus/", views.ResumableUploadsView.as_view(), name="tus-uploads"),
    path(
        "uploads/<str:session_id>/tus/<str:upload_id>",
        views.ResumableUploadView.as_view(),
        name="tus-upload",
    ),
    path(
        "sessions/<str:session_id>/artifacts/<str:artifact_id>",
        views.ArtifactView.as_view(),
        name="artifact",
    ),
    path(
        "sessions/<str:session_id>/artifacts/<str:artifact_id>/content",
        views.ArtifactContentView.as_view(),
        name="artifact-content",
    ),
    path(
        "sessions/<str:session_id>/artifacts/<str:artifact_id>/link",
        views.ArtifactLinkView.as_view(),
        name="artifact-link",
    ),
    path(
        "sessions/<str:session_id>/download",
        views.SessionDownloadView.as_view(),
        name="session-download",
    ),
    path(
        "sessions/<str:session_id>/download/link",
        views.SessionDownloadLinkView.as_view(),
        name="session-download-link",
    ),
]
