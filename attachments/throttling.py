"""Rate limits of the open endpoints."""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from .conf import conf


class SessionCreateThrottle(SimpleRateThrottle):
    """
    `ATTACHMENTS_SESSION_CREATE_RATE` session creations per client address,
    counted in Django's default cache (so across workers only with a shared
    cache). Behind a proxy, set DRF's `NUM_PROXIES` so the client's address is
    taken from X-Forwarded-For, or every client shares the proxy's count.
    """

    scope = "attachments_session_create"

    def get_rate(self) -> str | None:
        return conf.SESSION_CREATE_RATE

    def allow_request(self, request: Request, view: APIView) -> bool:
        # The rate is read per request, so a changed setting applies at once.
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request: Request, view: APIView) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
