"""The ASGI scope of an HTTP request, for the tests that call the application directly."""

from __future__ import annotations


def http_scope(
    path: str,
    method: str = "GET",
    *,
    query: str = "",
    headers: list[tuple[bytes, bytes]] | None = None,
    raw_path: str | None = None,
) -> dict:
    """As a server passes a request on: `path` percent-decoded, `raw_path` as sent."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": (path if raw_path is None else raw_path).encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"testserver")] if headers is None else headers,
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
