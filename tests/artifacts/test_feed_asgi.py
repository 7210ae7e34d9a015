"""The feed's ASGI fast path recognises its routes."""

from __future__ import annotations

from artifacts.feed_asgi import PAGE_VIEW, STREAM_VIEW, feed_route


def scope(path: str, method: str = "GET") -> dict:
    return {"type": "http", "method": method, "path": path, "root_path": ""}


def test_feed_routes_and_others():
    for _ in range(2):  # resolved, then remembered
        assert feed_route(scope("/api/sessions/s-1/artifact-events")) == (PAGE_VIEW, "s-1")
        assert feed_route(scope("/api/sessions/s-1/artifact-events/stream")) == (
            STREAM_VIEW,
            "s-1",
        )
        assert feed_route(scope("/api/sessions/s-1")) is None
        assert feed_route(scope("/api/sessions/s-1/artifact-events", "POST")) is None
