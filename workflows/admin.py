from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import NodeRun, WorkflowRun


class NodeRunInline(admin.TabularInline):
    model = NodeRun
    extra = 0
    can_delete = False
    fields = ["node_id", "type", "status", "exit_code", "started_at", "finished_at", "error"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: WorkflowRun | None = None) -> bool:
        return False


@admin.register(WorkflowRun)
class WorkflowRunAdmin(admin.ModelAdmin):
    list_display = ["run_id", "workflow", "session", "status", "created_at", "finished_at"]
    list_filter = ["status", "workflow", "created_at"]
    search_fields = ["run_id", "session__session_id", "workflow"]
    list_select_related = ["session"]
    date_hierarchy = "created_at"
    inlines = [NodeRunInline]
    readonly_fields = [
        "run_id",
        "session",
        "workflow",
        "spec",
        "task_prompt",
        "variables",
        "attachment_ids",
        "status",
        "error",
        "cancel_requested",
        "worker",
        "heartbeat_at",
        "created_at",
        "started_at",
        "finished_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Runs start through the API, which launches them.
        return False
