"""
What this app adds to another app's OpenAPI description. The feed's own
operations are described with its views (`artifacts.views`).
"""

from __future__ import annotations

from typing import Any


def describe_last_event_cursor(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the field this app adds to a session."""
    schemas = result.get("components", {}).get("schemas", {})
    # `SessionSerializer.contributed_fields` adds it at run time (see apps.py).
    for name in ("Session", "CreatedSession"):
        if name in schemas:
            schemas[name].setdefault("properties", {})["last_event_cursor"] = {
                "type": "integer",
                "readOnly": True,
                "description": "The last event's sequence: a cursor to read only new events from.",
            }
    return result
