"""A session's life: creation, lookup by id, and purge."""

from __future__ import annotations

import shutil

from django.db import IntegrityError, transaction
from django.utils import timezone

from . import paths
from .exceptions import InvalidSessionId, SessionExists, SessionNotFound
from .identifiers import new_session_id
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


def create_session(session_id: str | None = None) -> Session:
    """
    Create a session and its workspace. A proposed id must be well formed and
    never used before, purged sessions included.
    """
    if session_id is None:
        session_id = new_session_id()
    else:
        validate_session_id(session_id)
    try:
        with transaction.atomic():
            session = Session.objects.create(session_id=session_id)
    except IntegrityError:
        raise SessionExists() from None
    paths.attachments_dir(session.directory).mkdir(parents=True, exist_ok=True)
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
