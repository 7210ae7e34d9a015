from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from django.db.models import Count, Sum
from rest_framework import serializers

from .models import Attachment, Session


class AttachmentSerializer(serializers.ModelSerializer):
    session_id = serializers.CharField(source="session.session_id", read_only=True)
    mime_type = serializers.CharField(source="mime", read_only=True)

    class Meta:
        model = Attachment
        fields = [
            "attachment_id",
            "session_id",
            "name",
            "mime",
            "mime_type",
            "size",
            "sha256",
            "kind",
            "source",
            "node_id",
            "path",
            "metadata",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class SessionCreateSerializer(serializers.Serializer):
    session_id = serializers.CharField(required=False, allow_blank=False, max_length=200)


class SessionSerializer(serializers.ModelSerializer):
    """
    A session's status and counts. Other installed apps add read-only fields
    through `contributed_fields` (name -> function of the session), filled in
    their `AppConfig.ready()`, so this app never imports them.
    """

    contributed_fields: ClassVar[dict[str, Callable[[Session], Any]]] = {}

    counts = serializers.SerializerMethodField()

    class Meta:
        model = Session
        fields = ["session_id", "status", "created_at", "updated_at", "counts"]
        read_only_fields = fields

    def get_counts(self, session: Session) -> dict[str, int]:
        totals = session.attachments.filter(purged_at__isnull=True).aggregate(
            attachments=Count("id"), bytes=Sum("size")
        )
        return {"attachments": totals["attachments"], "attachment_bytes": totals["bytes"] or 0}

    def to_representation(self, instance: Session) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        for name, value_of in self.contributed_fields.items():
            data[name] = value_of(instance)
        return data
