from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import ArtifactEvent


@admin.register(ArtifactEvent)
class ArtifactEventAdmin(admin.ModelAdmin):
    """The event log, read-only: events are appended by the app, never edited."""

    list_display = ["sequence", "session", "change_type", "name", "mime", "size", "created_at"]
    list_filter = ["change_type", "kind"]
    search_fields = ["session__session_id", "artifact_id", "attachment_id", "name"]
    list_select_related = ["session"]
    ordering = ["-id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
