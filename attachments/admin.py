from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, QuerySet, Sum
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext_lazy as _

from .models import Attachment, Session


class AttachmentInline(admin.TabularInline):
    model = Attachment
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ["attachment_id", "name", "kind", "mime", "human_size", "source", "created_at"]
    readonly_fields = fields

    @admin.display(description=_("size"))
    def human_size(self, obj: Attachment) -> str:
        return filesizeformat(obj.size)

    def has_add_permission(self, request: HttpRequest, obj: Session | None = None) -> bool:
        return False


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = [
        "session_id",
        "status",
        "attachment_count",
        "total_size",
        "created_at",
        "updated_at",
        "purged_at",
    ]
    list_filter = ["status", "created_at", ("purged_at", admin.EmptyFieldListFilter)]
    search_fields = ["session_id", "attachments__attachment_id", "attachments__name"]
    readonly_fields = ["session_id", "created_at", "updated_at", "purged_at"]
    date_hierarchy = "created_at"
    inlines = [AttachmentInline]

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


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "attachment_id",
        "session",
        "kind",
        "mime",
        "human_size",
        "source",
        "created_at",
    ]
    list_filter = ["kind", "source", "mime", "created_at"]
    search_fields = ["name", "attachment_id", "session__session_id", "sha256"]
    list_select_related = ["session"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "attachment_id",
        "session",
        "name",
        "path",
        "mime",
        "kind",
        "size",
        "sha256",
        "source",
        "node_id",
        "metadata",
        "created_at",
        "updated_at",
        "purged_at",
    ]

    @admin.display(description=_("size"), ordering="size")
    def human_size(self, obj: Attachment) -> str:
        return filesizeformat(obj.size)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Attachments come from uploads and the manifest, never from a form.
        return False
