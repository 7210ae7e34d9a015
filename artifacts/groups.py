"""Channel-layer group names, built in one place (ASCII, at most 100 characters)."""

from __future__ import annotations


def session_group(session_id: str) -> str:
    # Session ids are [A-Za-z0-9_-]{1,64}; "_" is not allowed in group names.
    return "session." + session_id.replace("_", ".u")
