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


def _not_an_option(nbytes: int) -> str:
    # Never a leading "-": a value that reads as an option trips command lines
    # (`macctl list -abc...`, `macctl --token -abc...`, `rm`, `grep`).
    while True:
        value = secrets.token_urlsafe(nbytes)
        if not value.startswith("-"):
            return value


def new_session_id() -> str:
    return _not_an_option(16)


def new_session_token() -> str:
    """A session's secret: 32 random bytes, URL-safe (43 characters), never starting with '-'."""
    return _not_an_option(32)


def hash_token(token: str) -> str:
    """What is stored of a session token: its sha256, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
