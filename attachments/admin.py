from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, QuerySet, Sum
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .manifest import ManifestError
from .manifest_sync import sync_session_from_manifest
from .models import Attachment, Session
from .sessions import purge_session


def _file_url(attachment: Attachment, *, download: bool = False) -> str:
    url = reverse(
        "attachments:artifact",
        kwargs={
            "session_id": attachment.session.session_id,
            "artifact_id": attachment.attachment_id,
        },
    )
    return f"{url}?mode=stream" + ("&download=true" if download else "")


class AttachmentDisplayMixin:
    """Columns shared by the attachment admin and the inline on a session."""

    @admin.display(description=_("size"), ordering="size")
    def human_size(self, obj: Attachment) -> str:
        return filesizeformat(obj.size)

    @admin.display(description=_("preview"))
    def thumbnail(self, obj: Attachment) -> str:
        # Only raster images: an SVG is active content and is never shown inline.
        if obj.kind != Attachment.Kind.IMAGE or obj.mime == "image/svg+xml" or obj.purged_at:
            return "—"
        return format_html(
            '<img src="{}" alt="" loading="lazy" style="max-height:48px;max-width:96px">',
            _file_url(obj),
        )

    @admin.display(description=_("download"))
    def download_link(self, obj: Attachment) -> str:
        if obj.purged_at:
            return str(_("purged"))
        return format_html('<a href="{}">{}</a>', _file_url(obj, download=True), _("download"))


class AttachmentInline(AttachmentDisplayMixin, admin.TabularInline):
    model = Attachment
    extra = 0
    can_delete = False
    show_change_link = True
    fields = [
        "thumbnail",
        "attachment_id",
        "name",
        "kind",
        "mime",
        "human_size",
        "source",
        "created_at",
        "download_link",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Session | None = None) -> bool:
        return False


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = [
        "session_id",
        "status",
        "owner",
        "attachment_count",
        "total_size",
        "created_at",
        "updated_at",
        "purged_at",
    ]
    list_filter = ["status", "created_at", ("purged_at", admin.EmptyFieldListFilter)]
    search_fields = ["session_id", "attachments__attachment_id", "attachments__name"]
    readonly_fields = ["session_id", "created_at", "updated_at", "purged_at"]
    raw_id_fields = ["owner"]
    list_select_related = ["owner"]
    date_hierarchy = "created_at"
    inlines = [AttachmentInline]
    actions = ["purge_sessions", "rebuild_from_manifest"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Session]:
        return (
            super()
            .get_queryset(request)
            .annotate(_attachment_count=Count("attachments"), _total_size=Sum("attachments__size"))
        )

    @admin.display(description=_("attachments"), ordering="_attachment_count")
    def attachment_count(self, obj: Session) -> int:
        return getattr(obj, "_attachment_count", 0)

    @admin.display(description=_("total size"), ordering="_total_size")
    def total_size(self, obj: Session) -> str:
        return filesizeformat(getattr(obj, "_total_size", 0) or 0)

    @admin.action(description=_("Purge the selected sessions (files and records)"))
    def purge_sessions(self, request: HttpRequest, queryset: QuerySet[Session]) -> None:
        count = 0
        for session in queryset.filter(purged_at__isnull=True):
            purge_session(session)
            count += 1
        self.message_user(
            request, ngettext("%d session purged.", "%d sessions purged.", count) % count
        )

    @admin.action(description=_("Rebuild attachment records from the manifest"))
    def rebuild_from_manifest(self, request: HttpRequest, queryset: QuerySet[Session]) -> None:
        for session in queryset.filter(purged_at__isnull=True):
            try:
                report = sync_session_from_manifest(session)
            except ManifestError as exc:
                self.message_user(request, f"Session {session.session_id}: {exc}", messages.ERROR)
                continue
            self.message_user(
                request,
                f"Session {session.session_id}: {report.created} created, "
                f"{report.updated} updated, {report.removed} removed",
            )


@admin.register(Attachment)
class AttachmentAdmin(AttachmentDisplayMixin, admin.ModelAdmin):
    list_display = [
        "thumbnail",
        "name",
        "attachment_id",
        "session_link",
        "kind",
        "mime",
        "human_size",
        "source",
        "created_at",
        "download_link",
    ]
    list_display_links = ["name"]
    list_filter = [
        "kind",
        "source",
        "mime",
        "created_at",
        ("purged_at", admin.EmptyFieldListFilter),
    ]
    search_fields = ["name", "attachment_id", "session__session_id", "sha256"]
    list_select_related = ["session"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "thumbnail",
        "download_link",
        "attachment_id",
        "session",
        "name",
        "path",
        "mime",
        "kind",
        "human_size",
        "sha256",
        "source",
        "node_id",
        "metadata",
        "created_at",
        "updated_at",
        "purged_at",
    ]
    exclude = ["size"]

    @admin.display(description=_("session"), ordering="session__session_id")
    def session_link(self, obj: Attachment) -> str:
        session_id = obj.session.session_id
        return format_html(
            '<a href="?session__session_id__exact={}" title="{}">{}</a>',
            session_id,
            _("Only this session's attachments"),
            session_id,
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Attachments come from uploads and the manifest, never from a form.
        return False

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # "Filter by session" links use session__session_id__exact.
        return lookup == "session__session_id__exact" or super().lookup_allowed(
            lookup, value, request
        )
