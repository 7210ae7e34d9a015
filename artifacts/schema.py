"""
The event feed in the OpenAPI schema. Its two endpoints are plain async
views (and an ASGI middleware), which drf-spectacular does not see, so this
postprocessing hook describes them.
"""

from __future__ import annotations

from typing import Any

from .conf import conf

_FILTERS = [
    ("after", {"type": "integer", "minimum": 0}, "Cursor, exclusive: events after this sequence."),
    ("include_mime", {"type": "string"}, "Comma list; 'image/' matches a prefix."),
    ("include_ext", {"type": "string"}, "Comma list of extensions, with or without dot."),
    ("max_size", {"type": "integer", "minimum": 0}, "Largest file size in bytes."),
    ("limit", {"type": "integer", "minimum": 1}, "Events per page."),
]


def _parameters(waiting: bool) -> list[dict[str, Any]]:
    parameters = [
        {
            "name": "session_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"},
        }
    ]
    filters = list(_FILTERS)
    if waiting:
        filters.append(
            (
                "wait_seconds",
                {"type": "number", "minimum": 0, "maximum": conf.MAX_WAIT_SECONDS},
                "Wait this long for a matching event when there is none yet.",
            )
        )
    for name, schema, description in filters:
        if name == "limit":
            schema = {**schema, "maximum": conf.MAX_PAGE_SIZE}
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": schema,
                "description": description,
            }
        )
    return parameters


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


EVENT = {
    "type": "object",
    "description": (
        "One change to one artifact. The last six fields repeat others under the reference "
        "platform's names, for its Web UI and clients."
    ),
    "properties": {
        "artifact_id": {"type": "string"},
        "attachment_id": {"type": "string", "nullable": True},
        "node_id": {"type": "string", "nullable": True},
        "path": {"type": "string", "description": "Relative to the session directory."},
        "name": {"type": "string"},
        "size": {"type": "integer"},
        "mime": {"type": "string"},
        "kind": {"type": "string"},
        "hash": {"type": "string", "description": "sha256:<hex>"},
        "timestamp": {"type": "number", "description": "Unix seconds."},
        "change_type": {"type": "string", "enum": ["created", "updated", "deleted"]},
        "sequence": {"type": "integer"},
        "event_id": {"type": "string", "description": "= artifact_id"},
        "file_name": {"type": "string", "description": "= name"},
        "mime_type": {"type": "string", "description": "= mime"},
        "sha256": {"type": "string", "description": "The bare hex digest."},
        "relative_path": {
            "type": "string",
            "nullable": True,
            "description": "= path, relative to code_workspace/.",
        },
        "created_at": {"type": "number", "description": "= timestamp"},
    },
    "required": [
        "artifact_id",
        "attachment_id",
        "node_id",
        "path",
        "name",
        "size",
        "mime",
        "kind",
        "hash",
        "timestamp",
        "change_type",
        "sequence",
        "event_id",
        "file_name",
        "mime_type",
        "sha256",
        "relative_path",
        "created_at",
    ],
}


def describe_event_feed(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: add the long-poll and SSE endpoints."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault(
        "Error",
        {
            "type": "object",
            "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
            "required": ["detail", "code"],
        },
    )
    schemas["ArtifactEvent"] = EVENT
    # `SessionSerializer.contributed_fields` adds it at run time (see apps.py).
    for name in ("Session", "CreatedSession"):
        if name in schemas:
            schemas[name].setdefault("properties", {})["last_event_cursor"] = {
                "type": "integer",
                "readOnly": True,
                "description": "The last event's sequence: a cursor to read only new events from.",
            }
    errors = {
        "400": _error("A bad parameter (named in `parameter`) or session id."),
        "404": _error("No such session, or one the caller may not reach."),
        "405": _error("Only GET."),
        "410": _error("cursor_ahead or cursor_expired, with `resume_after`."),
    }
    security = [{"sessionToken": []}]
    paths = result.setdefault("paths", {})
    paths["/api/sessions/{session_id}/artifact-events"] = {
        "get": {
            "operationId": "artifact_events_page",
            "summary": "A page of the session's artifact events after a cursor (long-poll).",
            "tags": ["artifact-events"],
            "security": security,
            "parameters": _parameters(waiting=True),
            "responses": {
                "200": {
                    "description": "Events in sequence order.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "events": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/ArtifactEvent"},
                                    },
                                    "next_cursor": {"type": "integer"},
                                    "has_more": {"type": "boolean"},
                                    "timed_out": {"type": "boolean"},
                                },
                                "required": ["events", "next_cursor", "has_more", "timed_out"],
                            }
                        }
                    },
                },
                **errors,
            },
        }
    }
    paths["/api/sessions/{session_id}/artifact-events/stream"] = {
        "get": {
            "operationId": "artifact_events_stream",
            "summary": "The same events as Server-Sent Events; resume with Last-Event-ID.",
            "tags": ["artifact-events"],
            "security": security,
            "parameters": _parameters(waiting=False),
            "responses": {
                "200": {
                    "description": (
                        "One `id:` (the sequence) and `data:` (an ArtifactEvent) per event. "
                        "An `id:`-only block moves the resume point past events the filters "
                        "dropped; it is no event (clients that yield it, with empty data, "
                        "skip it but keep its id)."
                    ),
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **errors,
            },
        }
    }
    return result
