from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from artifacts.dashboard import dashboard

urlpatterns = [
    path("", dashboard, name="dashboard"),
    path("admin/", admin.site.urls),
    path("api/", include("attachments.urls")),
    path("api/", include("workflows.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("artifacts.urls")),
]

handler400 = "macproject.views.bad_request"
handler404 = "macproject.views.not_found"
handler500 = "macproject.views.server_error"
