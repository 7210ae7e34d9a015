"""Opaque, unguessable identifiers. No Django import (used by workflow nodes)."""

from __future__ import annotations

import hashlib
import re
import secrets

ATTACHMENT_PREFIX = "att_"
ID_RE = re.compile(r"^(att|art)_[A-Za-z0-9_-]{12,64}$")


def new_id(prefix: str) -> str:
    # 12 random bytes -> 16 URL-safe characters, 96 bits of entropy.
    return prefix + secrets.token_urlsafe(12)


def new_attachment_id() -> str:
    return new_id(ATTACHMENT_PREFIX)


def new_session_id() -> str:
    # Never a leading "-": an id that reads as an option trips command lines
    # (`macctl list -abc...`, `rm`, `grep`).
    while True:
        session_id = secrets.token_urlsafe(16)
        if not session_id.startswith("-"):
            return session_id


def new_session_token() -> str:
    """A session's secret: 32 random bytes, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What is stored of a session token: its sha256, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()

