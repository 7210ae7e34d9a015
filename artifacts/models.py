from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from attachments.identifiers import new_id
from attachments.models import Session
from attachments.paths import WORKSPACE_DIRNAME

ARTIFACT_PREFIX = "art_"


def new_artifact_id() -> str:
    return new_id(ARTIFACT_PREFIX)


class EventStream(models.Model):
    """
    A session's event counter. It is only written while the session's row is
    locked (see `artifacts.events.append_event`), which is what makes
    sequences gap-free and commit in order.
    """

    session = models.OneToOneField(
        Session,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="event_stream",
        verbose_name=_("session"),
    )
    last_sequence = models.PositiveBigIntegerField(_("last sequence"), default=0)
    trimmed_through = models.PositiveBigIntegerField(
        _("trimmed through"),
        default=0,
        help_text=_("Events up to this sequence were dropped by the retention policy."),
    )

    class Meta:
        verbose_name = _("event stream")
        verbose_name_plural = _("event streams")

    def __str__(self) -> str:
        return f"{self.session_id} @ {self.last_sequence}"


class ArtifactEvent(models.Model):
    """One change to one artifact of a session. Rows are appended, never edited."""

    class ChangeType(models.TextChoices):
        CREATED = "created", _("created")
        UPDATED = "updated", _("updated")
        DELETED = "deleted", _("deleted")

    session = models.ForeignKey(
        Session,
        on_delete=models.CASCADE,
        related_name="artifact_events",
        verbose_name=_("session"),
    )
    sequence = models.PositiveBigIntegerField(_("sequence"))
    artifact_id = models.CharField(
        _("artifact id"), max_length=80, unique=True, default=new_artifact_id, editable=False
    )
    change_type = models.CharField(_("change type"), max_length=16, choices=ChangeType.choices)
    attachment_id = models.CharField(_("attachment id"), max_length=80, blank=True, default="")
    node_id = models.CharField(_("node id"), max_length=128, blank=True, default="")
    path = models.CharField(
        _("path"), max_length=2048, help_text=_("Relative to the session directory.")
    )
    name = models.CharField(_("name"), max_length=1024)
    ext = models.CharField(
        _("extension"),
        max_length=32,
        blank=True,
        default="",
        help_text=_("Lower-case, without the dot; filters match it in SQL."),
    )
    size = models.PositiveBigIntegerField(_("size"))
    mime = models.CharField(_("MIME type"), max_length=255)
    kind = models.CharField(_("kind"), max_length=16, blank=True, default="")
    sha256 = models.CharField(_("SHA-256"), max_length=64)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("artifact event")
        verbose_name_plural = _("artifact events")
        ordering = ["session", "sequence"]
        constraints = [
            # Also the index every cursor page reads along.
            models.UniqueConstraint(
                fields=["session", "sequence"], name="artifact_event_session_sequence"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.change_type} {self.name}"

    def to_payload(self) -> dict[str, Any]:
        """
        The event as clients receive it: the one place an event becomes JSON,
        shared by the long-poll, Server-Sent Events and both sockets.

        Beside the contract's fields it carries the reference platform's
        names for the same facts (`event_id`, `file_name`, `mime_type`,
        `sha256`, `relative_path`, `created_at`), so that platform's Web UI
        and clients read these events unchanged.
        """
        timestamp = self.created_at.timestamp()
        return {
            "artifact_id": self.artifact_id,
            "attachment_id": self.attachment_id or None,
            "node_id": self.node_id or None,
            "path": self.path,
            "name": self.name,
            "size": self.size,
            "mime": self.mime,
            "kind": self.kind,
            "hash": f"sha256:{self.sha256}",
            "timestamp": timestamp,
            "change_type": self.change_type,
            "sequence": self.sequence,
            "event_id": self.artifact_id,
            "file_name": self.name,
            "mime_type": self.mime,
            "sha256": self.sha256,
            "relative_path": workspace_relative(self.path),
            "created_at": timestamp,
        }


def workspace_relative(path: str) -> str | None:
    """A session-relative path made relative to `code_workspace/`; None if it lies elsewhere."""
    prefix = WORKSPACE_DIRNAME + "/"
    return path[len(prefix) :] if path.startswith(prefix) and len(path) > len(prefix) else None
