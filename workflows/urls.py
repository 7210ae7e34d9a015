from __future__ import annotations

from django.urls import path

from . import views

app_name = "workflows"

urlpatterns = [
    path("workflows", views.WorkflowListView.as_view(), name="workflows"),
    path(
        "workflows/<str:name>/desc",
        views.WorkflowDescriptionView.as_view(),
        name="workflow-description",
    ),
    path("workflow/execute", views.ExecuteView.as_view(), name="execute"),
    path("workflow/runs", views.RunListView.as_view(), name="runs"),
    path("workflow/runs/<str:run_id>", views.RunDetailView.as_view(), name="run-detail"),
    path("workflow/runs/<str:run_id>/cancel", views.RunCancelView.as_view(), name="run-cancel"),
    path("workflow/runs/<str:run_id>/input", views.RunInputView.as_view(), name="run-input"),
]
