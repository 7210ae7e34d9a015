"""OpenAPI descriptions shared by the apps' views (drf-spectacular)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """Every error: a sentence for a person and a stable code for a program."""

    detail = serializers.CharField()
    code = serializers.CharField()
    errors = serializers.DictField(required=False, help_text="Per-field errors of an invalid body.")


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """The error responses an operation may give, all in the project's JSON shape."""
    return {status: OpenApiResponse(ErrorSerializer) for status in statuses}


def query(name: str, kind: Any, description: str, **kwargs: Any) -> OpenApiParameter:
    return OpenApiParameter(name, kind, OpenApiParameter.QUERY, description=description, **kwargs)


def binary(description: str) -> OpenApiResponse:
    return OpenApiResponse(OpenApiTypes.BINARY, description=description)


SESSION_ERRORS = errors(400, 404)

# Identifier formats, so generated clients and fuzzers know what a valid id is.
IDENTIFIER_PATTERNS = {
    "session_id": r"^[A-Za-z0-9_-]{1,64}$",
    "artifact_id": r"^(att|art)_[A-Za-z0-9_-]{12,64}$",
    "run_id": r"^run_[A-Za-z0-9_-]{12,64}$",
}


def describe_identifiers(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: give every id parameter its pattern."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                pattern = IDENTIFIER_PATTERNS.get(parameter.get("name"))
                if pattern:
                    parameter.setdefault("schema", {"type": "string"})["pattern"] = pattern
    return result


class SessionCredentialsScheme(OpenApiAuthenticationExtension):  # type: ignore[misc]
    """How `attachments.access` credentials appear in the schema."""

    target_class = "attachments.access.DjangoUserAuthentication"
    name = "sessionToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "The session's token from its creation, or an internal JWT naming the session. "
                "Where a header cannot be set, pass it as ?token=. A signed-in owner's (or staff) "
                "session cookie also works, with X-CSRFToken on unsafe methods. Anything that "
                "may not reach a session gets the 404 of an unknown one."
            ),
        }
