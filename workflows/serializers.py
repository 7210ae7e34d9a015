from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from rest_framework import serializers

from attachments.serializers import SessionIdField

from .models import NodeRun, WorkflowRun

MAX_PROMPT_CHARS = 100_000
# A validator that doubles as the OpenAPI schema's pattern.
NOT_BLANK = RegexValidator(r"\S", "This field may not be blank.")
MAX_ATTACHMENTS = 100


class ExecuteSerializer(serializers.Serializer):
    task_prompt = serializers.CharField(
        max_length=MAX_PROMPT_CHARS,
        allow_blank=False,
        validators=[NOT_BLANK],
        help_text="Required and not blank, even when only files are passed.",
    )
    workflow = serializers.CharField(required=False, max_length=200)
    yaml_file = serializers.CharField(required=False, max_length=200)
    session_id = SessionIdField(required=False, allow_null=True)
    attachments = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        max_length=MAX_ATTACHMENTS,
    )
    variables = serializers.DictField(required=False)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        workflow, yaml_file = data.get("workflow"), data.get("yaml_file")
        if workflow is None and yaml_file is None:
            raise serializers.ValidationError({"workflow": ["This field is required."]})
        if workflow is not None and yaml_file is not None and workflow != yaml_file:
            raise serializers.ValidationError(
                {"yaml_file": ["An alias of 'workflow': give one, or the same value."]}
            )
        data["workflow"] = workflow or yaml_file
        return data


class HumanInputSerializer(serializers.Serializer):
    input = serializers.CharField(
        max_length=MAX_PROMPT_CHARS, allow_blank=False, validators=[NOT_BLANK]
    )
    attachments = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, max_length=MAX_ATTACHMENTS
    )


class NodeRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = NodeRun
        fields = [
            "node_id",
            "type",
            "status",
            "started_at",
            "finished_at",
            "exit_code",
            "error",
            "output",
        ]
        read_only_fields = fields


class WorkflowRunSerializer(serializers.ModelSerializer):
    session_id = serializers.CharField(source="session.session_id", read_only=True)
    attachments = serializers.ListField(source="attachment_ids", read_only=True)
    nodes = NodeRunSerializer(many=True, read_only=True)
    waiting_for = serializers.SerializerMethodField()

    class Meta:
        model = WorkflowRun
        fields = [
            "run_id",
            "session_id",
            "workflow",
            "status",
            "task_prompt",
            "variables",
            "attachments",
            "error",
            "cancel_requested",
            "created_at",
            "started_at",
            "finished_at",
            "waiting_for",
            "nodes",
        ]
        read_only_fields = fields

    def get_waiting_for(self, run: WorkflowRun) -> dict[str, Any] | None:
        if run.status != WorkflowRun.Status.WAITING_FOR_INPUT:
            return None
        for node in run.nodes.all():
            if node.status == NodeRun.Status.WAITING_FOR_INPUT:
                spec = next((n for n in run.spec.get("nodes", []) if n["id"] == node.node_id), {})
                return {"node_id": node.node_id, "prompt": spec.get("prompt", "")}
        return None


def one_of_workflow_or_alias(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: `yaml_file` aliases `workflow`; one is required."""
    component = result.get("components", {}).get("schemas", {}).get("ExecuteRequest")
    if component is not None:
        component["anyOf"] = [{"required": ["workflow"]}, {"required": ["yaml_file"]}]
    return result
