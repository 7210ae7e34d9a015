"""
The URL routes of requests, as Django will resolve them, for the ASGI layers
that serve some of Django's routes themselves (uploads, the event feed) and
for the handler that picks a view's chain.

Django's resolver tries the project's patterns one by one, and a request
was resolved by up to three layers, Django's own included, before its view
ran (the feed's layer kept a cache of its own). Routes are kept
per path, for one URL resolver (a new ROOT_URLCONF resolves afresh), and
bounded, since paths carry session and file ids.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from typing import Any

from django.urls import Resolver404, get_resolver

# Paths remembered, and the longest remembered: ids are short, and a client
# sending long unique paths must not grow the cache by their length.
MAX_CACHED_ROUTES = 4096
MAX_CACHED_PATH = 512


@dataclasses.dataclass(frozen=True)
class Route:
    """Where a path leads: shared between requests, so read-only."""

    view_name: str
    kwargs: Mapping[str, Any]
    func: Callable[..., Any]


_routes: dict[str, Route | None] = {}
_routes_resolver: object = None


def route_of(path: str) -> Route | None:
    """
    The route of `path` (the path Django resolves, without the root path),
    or None where Django would answer 404. Django resolves with ROOT_URLCONF
    until a middleware sets a request's own urlconf, which the layers asking
    here run before.
    """
    global _routes_resolver
    resolver = get_resolver()
    if resolver is not _routes_resolver:
        _routes.clear()
        _routes_resolver = resolver
    try:
        return _routes[path]
    except KeyError:
        pass
    try:
        match = resolver.resolve(path)
    except Resolver404:
        route = None
    else:
        route = Route(match.view_name, types.MappingProxyType(dict(match.kwargs)), match.func)
    if len(path) <= MAX_CACHED_PATH:
        if len(_routes) >= MAX_CACHED_ROUTES:
            _routes.clear()
        _routes[path] = route
    return route


def resolve_http(scope: Mapping[str, Any], method: str) -> Route | None:
    """The route of an HTTP request with this method (under the scope's root path), or None."""
    if scope["type"] != "http" or scope["method"] != method:
        return None
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return route_of(path)
