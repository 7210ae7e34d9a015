from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from .models import ArtifactEvent


@admin.register(ArtifactEvent)
class ArtifactEventAdmin(admin.ModelAdmin):
    """The event log, read-only: events are appended by the app, never edited."""

    list_display = [
        "sequence",
        "session_link",
        "change_type",
        "name",
        "kind",
        "mime",
        "human_size",
        "node_id",
        "created_at",
    ]
    list_display_links = ["sequence", "name"]
    list_filter = ["change_type", "kind", "mime", "created_at"]
    search_fields = ["session__session_id", "artifact_id", "attachment_id", "name"]
    list_select_related = ["session"]
    ordering = ["-id"]

    @admin.display(description=_("session"), ordering="session__session_id")
    def session_link(self, obj: ArtifactEvent) -> str:
        session_id = obj.session.session_id
        return format_html(
            '<a href="?session__session_id__exact={}" title="{}">{}</a>',
            session_id,
            _("Only this session's events"),
            session_id,
        )

    @admin.display(description=_("size"), ordering="size")
    def human_size(self, obj: ArtifactEvent) -> str:
        return filesizeformat(obj.size)

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        return lookup == "session__session_id__exact" or super().lookup_allowed(
            lookup, value, request
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
