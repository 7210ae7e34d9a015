from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cached_property
from typing import Any, ClassVar

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from . import paths
from .conf import conf
from .models import Attachment, Session
from .parameters import FlagField, WholeNumberField
from .quotas import Usage, quota_fields, usage
from .selection import FileFilterParameters
from .sessions import validate_session_id


class PrebuiltFieldsMixin:
    """
    A ModelSerializer that builds its fields from the model once per class.
    DRF builds them for every serializer it creates, which for one file's
    row cost more than the rest of its representation: an upload's response
    spent longer here than in its database transaction. Each serializer still
    gets its own copies, since binding a field to its parent changes it.
    """

    _prebuilt_fields: ClassVar[dict[type, dict[str, serializers.Field]]] = {}

    def get_fields(self) -> dict[str, serializers.Field]:
        cls = type(self)
        prototype = PrebuiltFieldsMixin._prebuilt_fields.get(cls)
        if prototype is None:
            prototype = super().get_fields()  # type: ignore[misc]
            PrebuiltFieldsMixin._prebuilt_fields[cls] = prototype
        return copy.deepcopy(prototype)


class SharedFieldsMixin(PrebuiltFieldsMixin):
    """
    A serializer whose fields read nothing but the instance (no method
    fields, no context): one that only represents an instance, outside any
    other serializer, uses fields bound once per class instead of copies
    of its own. Copying them was still a tenth of an upload's answer.
    """

    _shared_fields: ClassVar[dict[type, Any]] = {}

    @cached_property
    def fields(self) -> Any:
        represents_only = (
            self.parent is None  # type: ignore[attr-defined]
            and not self._context  # type: ignore[attr-defined]
            and getattr(self, "instance", None) is not None
            and not hasattr(self, "initial_data")
        )
        if not represents_only:
            return super().fields  # type: ignore[misc]
        cls = type(self)
        shared = SharedFieldsMixin._shared_fields.get(cls)
        if shared is None:
            shared = SharedFieldsMixin._shared_fields[cls] = cls().fields  # type: ignore[call-arg]
        return shared


class AttachmentSerializer(SharedFieldsMixin, serializers.ModelSerializer):
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


class ArtifactMetaSerializer(AttachmentSerializer):
    """
    What `mode=meta` shows of an artifact (`ResolvedArtifact.metadata` builds
    it): the attachment's fields, the id as asked, and for an `art_` id the
    event's own. Declared for the schema, so generated clients get a type.
    """

    artifact_id = serializers.CharField(read_only=True, help_text="The id as asked: att_ or art_.")
    hash = serializers.CharField(read_only=True, allow_null=True, help_text="sha256:<hex>")
    data_uri = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="The bytes as a data: URI, up to ATTACHMENTS_INLINE_DATA_URI_MAX_BYTES.",
    )
    # Only for art_ ids; not read-only, or the schema would call them required.
    change_type = serializers.ChoiceField(
        ["created", "updated", "deleted"], required=False, help_text="art_ ids only."
    )
    sequence = serializers.IntegerField(required=False, help_text="art_ ids only.")
    timestamp = serializers.FloatField(required=False, help_text="art_ ids only.")

    class Meta(AttachmentSerializer.Meta):
        fields = [
            "artifact_id",
            *AttachmentSerializer.Meta.fields,
            "hash",
            "data_uri",
            "change_type",
            "sequence",
            "timestamp",
        ]
        read_only_fields = [*AttachmentSerializer.Meta.fields]


@extend_schema_field({"type": "string", "pattern": paths.SESSION_ID_RE.pattern})
class SessionIdField(serializers.Field):
    """A session id in a request body; a malformed one is the API's 400 `invalid_session_id`."""

    def to_internal_value(self, data: Any) -> str:
        return validate_session_id(data)

    def to_representation(self, value: str) -> str:
        return value


class SessionCreateSerializer(serializers.Serializer):
    session_id = SessionIdField(
        required=False, help_text="A proposed id; by default the server makes one up."
    )


class SessionSerializer(PrebuiltFieldsMixin, serializers.ModelSerializer):
    """
    A session's status and counts. Other installed apps add read-only fields
    through `contributed_fields` (name -> function of the session), filled in
    their `AppConfig.ready()`, so this app never imports them.
    """

    contributed_fields: ClassVar[dict[str, Callable[[Session], Any]]] = {}

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

    def to_representation(self, instance: Session) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        for name, value_of in self.contributed_fields.items():
            data[name] = value_of(instance)
        return data


class CreatedSessionSerializer(SessionSerializer):
    """A session just created: its token is shown this once, and never again."""

    token = serializers.CharField(
        read_only=True, help_text="The session's token; only a hash of it is stored."
    )

    class Meta(SessionSerializer.Meta):
        fields = [*SessionSerializer.Meta.fields, "token"]
        read_only_fields = fields


class DownloadParameters(FileFilterParameters):
    """The session zip's query: the file filters, a change cursor and the zip's kind."""

    after = WholeNumberField(
        required=False,
        detail="'after' must be an event cursor (a whole number of at least 0).",
        help_text="An event cursor: only the files changed since.",
    )
    compress = FlagField(
        required=False,
        default=True,
        detail="'compress' must be true or false.",
        help_text="false: a stored zip with a known length.",
    )
