"""A test-only URLconf: the project's, plus a view that fails unexpectedly."""

from __future__ import annotations

from django.urls import path
from rest_framework.views import APIView

from attachments.exceptions import JSONErrorsMixin
from macproject.urls import handler400, handler404, handler500, urlpatterns  # noqa: F401


class CrashView(JSONErrorsMixin, APIView):
    def get(self, request):
        raise RuntimeError("secret internals: /srv/WareHouse and a stack trace")


def plain_crash(request):
    raise RuntimeError("secret internals: /srv/WareHouse and a stack trace")


urlpatterns = [
    path("api/crash", CrashView.as_view()),
    path("api/plain-crash", plain_crash),
    *urlpatterns,
]
