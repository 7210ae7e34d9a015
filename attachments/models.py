from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import paths
from .conf import conf


class SessionQuerySet(models.QuerySet):
    def live(self) -> SessionQuerySet:
        """Sessions that have not been purged."""
        return self.filter(purged_at__isnull=True)


class Session(models.Model):
    class Status(models.TextChoices):
        CREATED = "created", _("created")
        RUNNING = "running", _("running")
        WAITING_FOR_INPUT = "waiting_for_input", _("waiting for input")
        COMPLETED = "completed", _("completed")
        FAILED = "failed", _("failed")
        CANCELLED = "cancelled", _("cancelled")

    session_id = models.CharField(
        _("session id"),
        max_length=64,
        unique=True,
        validators=[RegexValidator(paths.SESSION_ID_RE)],
    )
    status = models.CharField(
        _("status"), max_length=32, choices=Status.choices, default=Status.CREATED
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    # A purged session keeps its row as a tombstone, so its id answers 404
    # and is never handed out again.
    purged_at = models.DateTimeField(_("purged at"), null=True, blank=True)
    # Only a hash of the session's secret token is kept (see attachments.access);
    # empty for sessions created before tokens existed, which only their owner,
    # staff or an internal JWT reach.
    token_hash = models.CharField(
        _("token hash"), max_length=64, blank=True, default="", editable=False
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="attachment_sessions",
        verbose_name=_("owner"),
    )

    # What the session's live attachments take, moved in the transactions
    # that record or remove them (see attachments.quotas).
    used_files = models.PositiveIntegerField(_("files used"), default=0, editable=False)
    used_bytes = models.PositiveBigIntegerField(_("bytes used"), default=0, editable=False)

    objects = SessionQuerySet.as_manager()

    # The secret token, set only on the instance that `create_session()` returns.
    token: str | None = None

    class Meta:
        verbose_name = _("session")
        verbose_name_plural = _("sessions")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.session_id

    @property
    def directory(self) -> Path:
        return paths.session_dir(conf.WAREHOUSE_DIR, self.session_id)


class Attachment(models.Model):
    class Kind(models.TextChoices):
        IMAGE = "image", _("image")
        AUDIO = "audio", _("audio")
        VIDEO = "video", _("video")
        FILE = "file", _("file")

    class Source(models.TextChoices):
        USER_UPLOAD = "user_upload", _("user upload")
        WORKSPACE = "workspace", _("workspace")
        REGISTERED = "registered", _("registered")

    attachment_id = models.CharField(_("attachment id"), max_length=80, unique=True)
    session = models.ForeignKey(
        Session, on_delete=models.CASCADE, related_name="attachments", verbose_name=_("session")
    )
    name = models.CharField(_("name"), max_length=paths.MAX_DISPLAY_NAME_CHARS)
    path = models.CharField(
        _("path"), max_length=2048, help_text=_("Relative to the session directory.")
    )
    mime = models.CharField(_("MIME type"), max_length=255)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices, default=Kind.FILE)
    size = models.PositiveBigIntegerField(_("size"))
    sha256 = models.CharField(_("SHA-256"), max_length=64)
    # Not limited to Source's values: other producers may add their own.
    source = models.CharField(_("source"), max_length=64, default=Source.USER_UPLOAD)
    node_id = models.CharField(_("node id"), max_length=128, blank=True, default="")
    metadata = models.JSONField(_("metadata"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), default=timezone.now)
    purged_at = models.DateTimeField(_("purged at"), null=True, blank=True)

    class Meta:
        verbose_name = _("attachment")
        verbose_name_plural = _("attachments")
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["session", "created_at"], name="attachment_session_created")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.attachment_id})"

    @property
    def file_path(self) -> Path:
        return paths.safe_join(self.session.directory, self.path)


class ResumableUpload(models.Model):
    """
    A tus upload in progress: its bytes are in the session's staging
    directory (`attachments/.staging/<attachment_id>/`), invisible to
    listings, zips and quotas until the last byte arrives and it is recorded
    like any other upload.
    """

    upload_id = models.CharField(_("upload id"), max_length=64, unique=True)
    session = models.ForeignKey(
        Session,
        on_delete=models.CASCADE,
        related_name="resumable_uploads",
        verbose_name=_("session"),
    )
    attachment_id = models.CharField(_("attachment id"), max_length=80, unique=True)
    name = models.CharField(_("name"), max_length=paths.MAX_DISPLAY_NAME_CHARS)
    filename = models.CharField(_("file name on disk"), max_length=255)
    length = models.PositiveBigIntegerField(_("length"))
    offset = models.PositiveBigIntegerField(_("offset"), default=0)
    # A PATCH is answered once its bytes are written, and fsync'd just
    # after (attachments.resumable): the bytes up to `synced_offset` are on
    # the device; those past it, up to `offset`, are in the page cache of
    # the boot `unsynced_on` ("" when there are none), which every process of
    # that boot sees and a reboot loses.
    synced_offset = models.PositiveBigIntegerField(_("synced offset"), default=0)
    unsynced_on = models.CharField(_("unsynced on boot"), max_length=64, blank=True, default="")
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    expires_at = models.DateTimeField(_("expires at"), db_index=True)
    # The PATCH writing the upload now, on whichever worker or host: a lease
    # taken with a conditional UPDATE (attachments.resumable), free once
    # `lease_expires_at` has passed, so a holder that died releases it.
    lease_token = models.CharField(_("lease token"), max_length=32, blank=True, default="")
    lease_expires_at = models.DateTimeField(_("lease expires at"), null=True, blank=True)
    # The process holding it (attachments.holders): a worker on the same
    # machine frees the lease of one that died at once, not when it lapses.
    lease_holder = models.CharField(_("lease holder"), max_length=100, blank=True, default="")

    class Meta:
        verbose_name = _("resumable upload")
        verbose_name_plural = _("resumable uploads")
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.offset}/{self.length})"

    @property
    def directory(self) -> Path:
        return paths.staging_dir(self.session.directory) / self.attachment_id

    @property
    def file_path(self) -> Path:
        return self.directory / self.filename
