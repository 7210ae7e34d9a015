"""Requests are routed as Django routes them, remembered per path for the current URLconf."""

from __future__ import annotations

import pytest
from django.test import override_settings

from attachments import routes
from attachments.routes import MAX_CACHED_PATH, resolve_http, route_of


def scope(path: str, method: str = "POST", root_path: str = "") -> dict:
    return {"type": "http", "method": method, "path": path, "root_path": root_path}


def test_a_path_leads_where_django_sends_it():
    for _ in range(2):  # resolved, then remembered
        route = route_of("/api/uploads/s-1")
        assert route is not None
        assert route.view_name == "attachments:uploads"
        assert route.kwargs == {"session_id": "s-1"}
        assert route_of("/api/no-such-thing") is None


def test_only_the_asked_method_and_http_are_routed():
    assert resolve_http(scope("/api/uploads/s-1"), "POST") is not None
    assert resolve_http(scope("/api/uploads/s-1"), "PATCH") is None
    assert resolve_http({**scope("/api/uploads/s-1"), "type": "websocket"}, "POST") is None


def test_the_root_path_is_not_part_of_the_route():
    route = resolve_http(scope("/mac/api/uploads/s-1", root_path="/mac"), "POST")
    assert route is not None and route.kwargs == {"session_id": "s-1"}


def test_a_new_urlconf_resolves_afresh():
    path = "/api/sessions/s-2/artifact-events"
    assert route_of(path) is not None
    # A URLconf without the feed under /api/: the remembered route no longer holds.
    with override_settings(ROOT_URLCONF="attachments.urls"):
        assert route_of(path) is None
    assert route_of(path) is not None


def test_a_remembered_route_cannot_be_changed_by_one_request():
    route = route_of("/api/uploads/s-3")
    assert route is not None
    with pytest.raises(TypeError):
        route.kwargs["session_id"] = "s-4"  # type: ignore[index]
    assert route_of("/api/uploads/s-3").kwargs == {"session_id": "s-3"}


def test_long_paths_are_routed_but_not_remembered():
    long_id = "s" * MAX_CACHED_PATH
    route = route_of(f"/api/uploads/{long_id}")
    assert route is not None and route.kwargs == {"session_id": long_id}
    assert f"/api/uploads/{long_id}" not in routes._routes
    route_of("/api/uploads/s-5")
    assert "/api/uploads/s-5" in routes._routes
