from __future__ import annotations

from typing import Any

from rest_framework import serializers

from .conf import conf
from .models import Attachment, Session
from .quotas import Usage, quota_fields, usage


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
    counts = serializers.SerializerMethodField()
    limits = serializers.SerializerMethodField()

    class Meta:
        model = Session
        fields = ["session_id", "status", "created_at", "updated_at", "counts", "limits"]
        read_only_fields = fields

    def _usage(self, session: Session) -> Usage:
        # counts and limits both need it; one query per session is enough.
        cache = self.__dict__.setdefault("_usage_by_pk", {})
        if session.pk not in cache:
            cache[session.pk] = usage(session)
        return cache[session.pk]

    def get_counts(self, session: Session) -> dict[str, int]:
        current = self._usage(session)
        return {"attachments": current.files, "attachment_bytes": current.bytes}

    def get_limits(self, session: Session) -> dict[str, Any]:
        return {"max_upload_bytes": conf.MAX_UPLOAD_BYTES, **quota_fields(self._usage(session))}
