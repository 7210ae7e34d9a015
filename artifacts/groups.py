"""Channel-layer group names, built in one place (ASCII, at most 100 characters)."""

from __future__ import annotations

import hashlib

MAX_GROUP_NAME = 100


def _group(prefix: str, session_id: str) -> str:
    # Session ids are [A-Za-z0-9_-]{1,64}. Group names may not hold "_", and
    # ids never hold ".", so ".u" for "_" cannot collide; ids with so many
    # underscores that the name would pass the length limit are hashed.
    name = prefix + session_id.replace("_", ".u")
    if len(name) <= MAX_GROUP_NAME:
        return name
    return prefix + "sha256." + hashlib.sha256(session_id.encode()).hexdigest()


def session_group(session_id: str) -> str:
    """The members of a session's control sockets (`/ws`)."""
    return _group("session.", session_id)


def events_group(session_id: str) -> str:
    """The processes waiting for the session's next artifact event."""
    return _group("artifact-events.", session_id)
