"""
Receivers that turn changes to `attachments.Attachment` rows into artifact
events. They run inside the transaction that changes the row, so the event
commits (or rolls back) with it. One more receiver drops what the feed's
fast path built from settings when they change (tests' `override_settings`).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from attachments.models import Attachment, Session
from attachments.signals import attachments_recorded

from . import events
from .models import ArtifactEvent

# Attribute under which pre_save leaves the row's stored state for post_save.
_PREVIOUS = "_artifacts_previous_state"
_TRACKED_FIELDS = ("sha256", "size", "purged_at")


@receiver(pre_save, sender=Attachment, dispatch_uid="artifacts.remember_attachment_state")
def remember_attachment_state(
    sender: type[Attachment], instance: Attachment, raw: bool, update_fields: Any, **kwargs: Any
) -> None:
    """Read the stored row before an update, so post_save can tell what changed."""
    if raw or instance._state.adding or instance.pk is None:
        return
    if update_fields is not None and not set(update_fields) & set(_TRACKED_FIELDS):
        setattr(instance, _PREVIOUS, None)
        return
    stored = sender._default_manager.filter(pk=instance.pk).values(*_TRACKED_FIELDS).first()
    setattr(instance, _PREVIOUS, stored)


@receiver(post_save, sender=Attachment, dispatch_uid="artifacts.attachment_saved")
def attachment_saved(
    sender: type[Attachment], instance: Attachment, created: bool, raw: bool, **kwargs: Any
) -> None:
    if raw:
        return
    change = _change_for_save(instance, created)
    if change is not None:
        events.append_event(instance, change)


def _change_for_save(instance: Attachment, created: bool) -> str | None:
    live = instance.purged_at is None
    if created:
        return ArtifactEvent.ChangeType.CREATED if live else None
    previous = instance.__dict__.pop(_PREVIOUS, None)
    if previous is None:
        return None
    was_live = previous["purged_at"] is None
    if was_live and not live:
        return ArtifactEvent.ChangeType.DELETED
    if live and not was_live:
        return ArtifactEvent.ChangeType.CREATED
    if live and (previous["sha256"], previous["size"]) != (instance.sha256, instance.size):
        return ArtifactEvent.ChangeType.UPDATED
    return None


@receiver(attachments_recorded, sender=Attachment, dispatch_uid="artifacts.attachments_recorded")
def attachments_recorded_in_bulk(
    sender: type[Attachment], batches: list[tuple[Session, list[Attachment]]], **kwargs: Any
) -> None:
    events.append_created_events(batches)


@receiver(post_delete, sender=Attachment, dispatch_uid="artifacts.attachment_deleted")
def attachment_deleted(
    sender: type[Attachment], instance: Attachment, origin: Any = None, **kwargs: Any
) -> None:
    # A purged attachment announced its deletion when it was purged. Rows
    # removed because their session (or its owner) is being deleted get no
    # event: the session's events go with it.
    if instance.purged_at is None and _deleted_for_itself(origin):
        events.append_event(instance, ArtifactEvent.ChangeType.DELETED)


def _deleted_for_itself(origin: Any) -> bool:
    if origin is None:
        return True
    model = origin.model if isinstance(origin, QuerySet) else type(origin)
    return issubclass(model, Attachment)


@receiver(post_save, sender=Session, dispatch_uid="artifacts.session_saved")
def session_saved(
    sender: type[Session], instance: Session, raw: bool, update_fields: Any, **kwargs: Any
) -> None:
    if raw or instance.purged_at is None:
        return
    if update_fields is None or "purged_at" in update_fields:
        events.forget_session(instance)
