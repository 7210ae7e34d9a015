"""A session's life: creation, lookup by id, and purge."""

from __future__ import annotations

import shutil
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from . import paths
from .exceptions import InvalidSessionId, SessionExists, SessionNotFound
from .identifiers import hash_token, new_session_id, new_session_token
from .manifest import make_directories
from .models import Session


def validate_session_id(session_id: object) -> str:
    if not paths.is_valid_session_id(session_id):
        raise InvalidSessionId()
    assert isinstance(session_id, str)
    return session_id


def get_live_session(session_id: object) -> Session:
    """The session with this id, unless the id is malformed (400) or unknown or purged (404)."""
    valid_id = validate_session_id(session_id)
    try:
        return Session.objects.live().get(session_id=valid_id)
    except Session.DoesNotExist:
        raise SessionNotFound() from None


def create_session(session_id: str | None = None, owner: Any = None) -> Session:
    """
    Create a session and its workspace, owned by `owner` (a user) or nobody.
    A proposed id must be well formed and never used before, purged sessions
    included. The returned instance's `token` is the session's secret: only
    its hash is stored, so this is the one time it can be handed out.
    """
    if session_id is None:
        session_id = new_session_id()
    else:
        validate_session_id(session_id)
    token = new_session_token()
    try:
        with transaction.atomic():
            session = Session.objects.create(
                session_id=session_id, owner=owner, token_hash=hash_token(token)
            )
    except IntegrityError:
        raise SessionExists() from None
    make_directories(paths.attachments_dir(session.directory))
    session.token = token
    return session


def purge_session(session: Session) -> None:
    """Remove the session's directory and records; its id answers 404 from now on."""
    with transaction.atomic():
        locked = Session.objects.select_for_update().get(pk=session.pk)
        locked.attachments.all().delete()
        locked.purged_at = timezone.now()
        locked.save(update_fields=["purged_at", "updated_at"])
    shutil.rmtree(session.directory, ignore_errors=True)
    session.purged_at = locked.purged_at
