"""
The event feed's query parameters and payloads, described once: the feed
reads its parameters through these serializers (`artifacts.feed.parse_query`)
and drf-spectacular builds the feed's OpenAPI operations from them
(`artifacts.views`).
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from attachments.parameters import SecondsField, WholeNumberField
from attachments.selection import FileFilterParameters

from .conf import conf


class FeedParameters(FileFilterParameters):
    """An event stream's parameters: a cursor, a page size and the file filters."""

    # `after=` is not "from the start": a client that sends it has lost its cursor.
    blank_is_absent = False

    @classmethod
    def settings_key(cls) -> tuple[Any, ...]:
        return (conf.MAX_PAGE_SIZE, conf.MAX_WAIT_SECONDS)

    def get_fields(self) -> dict[str, serializers.Field]:
        # Bounds come from the settings when the parameters are read, not at import.
        max_page = conf.MAX_PAGE_SIZE
        return {
            "after": WholeNumberField(
                required=False,
                detail="'after' must be a sequence number (a whole number, 0 or more).",
                help_text="Cursor, exclusive: events after this sequence.",
            ),
            "limit": WholeNumberField(
                required=False,
                default=max_page,
                min_value=1,
                max_value=max_page,
                detail=f"'limit' must be a whole number from 1 to {max_page}.",
                help_text="Events per page.",
            ),
            **super().get_fields(),
        }


class LongPollParameters(FeedParameters):
    """The long-poll's parameters: a stream's, and how long to wait for an event."""

    def get_fields(self) -> dict[str, serializers.Field]:
        longest = conf.MAX_WAIT_SECONDS
        return {
            "wait_seconds": SecondsField(
                required=False,
                default=0.0,
                min_value=0,
                max_value=longest,
                detail=f"'wait_seconds' must be a number of seconds from 0 to {longest:g}.",
                help_text="Wait this long for a matching event when there is none yet.",
            ),
            **super().get_fields(),
        }


class ArtifactEventSerializer(serializers.Serializer):  # type: ignore[misc]
    """
    One change to one artifact. The last six fields repeat others under the
    reference platform's names, for its Web UI and clients.
    """

    # As `ArtifactEvent.to_payload` builds it; only the schema reads this.

    artifact_id = serializers.CharField()
    attachment_id = serializers.CharField(allow_null=True)
    node_id = serializers.CharField(allow_null=True)
    path = serializers.CharField(help_text="Relative to the session directory.")
    name = serializers.CharField()
    size = serializers.IntegerField()
    mime = serializers.CharField()
    kind = serializers.CharField()
    hash = serializers.CharField(help_text="sha256:<hex>")
    timestamp = serializers.FloatField(help_text="Unix seconds.")
    change_type = serializers.ChoiceField(choices=["created", "updated", "deleted"])
    sequence = serializers.IntegerField()
    event_id = serializers.CharField(help_text="= artifact_id")
    file_name = serializers.CharField(help_text="= name")
    mime_type = serializers.CharField(help_text="= mime")
    sha256 = serializers.CharField(help_text="The bare hex digest.")
    relative_path = serializers.CharField(
        allow_null=True, help_text="= path, relative to code_workspace/."
    )
    created_at = serializers.FloatField(help_text="= timestamp")

    class Meta:
        ref_name = "ArtifactEvent"


class EventPageSerializer(serializers.Serializer):  # type: ignore[misc]
    """A long-poll page (`Page.to_json`)."""

    events = ArtifactEventSerializer(many=True)
    next_cursor = serializers.IntegerField()
    has_more = serializers.BooleanField()
    timed_out = serializers.BooleanField()


def describe_last_event_cursor(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the field this app adds to a session."""
    schemas = result.get("components", {}).get("schemas", {})
    # `SessionSerializer.contributed_fields` adds it at run time (see apps.py).
    for name in ("Session", "CreatedSession"):
        if name in schemas:
            schemas[name].setdefault("properties", {})["last_event_cursor"] = {
                "type": "integer",
                "readOnly": True,
                "description": "The last event's sequence: a cursor to read only new events from.",
            }
    return result
