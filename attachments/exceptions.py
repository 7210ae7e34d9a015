"""
The API's errors. Each carries an HTTP status, a sentence for a person and a
stable machine code, and renders as `{"detail": ..., "code": ..., ...}` on
every path: DRF views, the streaming upload path, and Django's own 404/500.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApiError(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The request is invalid."
    default_code = "invalid"

    def __init__(self, detail: str | None = None, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.default_detail, code or self.default_code)
        self.code = code or self.default_code
        self.extra = extra


class InvalidSessionId(ApiError):
    default_detail = "Session ids are 1 to 64 letters, digits, '_' or '-'."
    default_code = "invalid_session_id"


class SessionNotFound(ApiError):
    status_code = status.HTTP_404_NOT_FOUND
    default_detail = "No such session."
    default_code = "session_not_found"


class CsrfFailed(ApiError):
    """A signed-in browser's unsafe request without a valid CSRF token, and no other credential."""

    status_code = status.HTTP_403_FORBIDDEN
    default_detail = (
        "CSRF check failed: send the csrftoken cookie's value in the X-CSRFToken header, "
        "or authenticate with a token instead of the session cookie."
    )
    default_code = "csrf_failed"


class SessionIdNotAllowed(ApiError):
    status_code = status.HTTP_403_FORBIDDEN
    default_detail = (
        "Only a signed-in user or a JWT naming the session may propose a session id; "
        "leave it out and the server makes one."
    )
    default_code = "session_id_not_allowed"


class SessionExists(ApiError):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "A session with this id already exists."
    default_code = "session_exists"


class MissingFile(ApiError):
    default_detail = "Send the file in a multipart/form-data field named 'file'."
    default_code = "missing_file"


class MultipleFiles(ApiError):
    default_detail = "Send one file per request, in the field 'file'."
    default_code = "multiple_files"


class InvalidMultipart(ApiError):
    default_detail = "The multipart/form-data body could not be parsed."
    default_code = "invalid_multipart"


class UnsupportedMediaType(ApiError):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    default_detail = "Uploads must be sent as multipart/form-data."
    default_code = "unsupported_media_type"


class UploadTooLarge(ApiError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The upload is larger than this server accepts."
    default_code = "upload_too_large"


class InsufficientStorage(ApiError):
    status_code = 507
    default_detail = "The server's storage is full; nothing was kept. Retry later."
    default_code = "insufficient_storage"


class ServerError(ApiError):
    """A failure of the server's own, not the client's doing (a bug): logged, answered as JSON."""

    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_detail = "The server failed to handle this request."
    default_code = "server_error"


class ServiceUnavailable(ApiError):
    """A backing service (the database) is unreachable; the answer carries Retry-After."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = (
        "A service the server needs is unavailable; nothing was changed. Retry shortly."
    )
    default_code = "service_unavailable"
    retry_after = 2


def classify_server_error(exc: BaseException) -> ApiError | None:
    """
    The API error for a failure of the server's own resources, or None for a
    bug: a full disk is 507, an unreachable database or channel layer 503.
    """
    import errno

    from django.db import DatabaseError, InterfaceError, OperationalError

    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage()
    if isinstance(exc, (OperationalError, InterfaceError)):
        return ServiceUnavailable(
            "The database is unavailable; nothing was changed. Retry shortly."
        )
    if isinstance(exc, DatabaseError) and "connection" in str(exc).lower():
        return ServiceUnavailable(
            "The database is unavailable; nothing was changed. Retry shortly."
        )
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return ServiceUnavailable()
    return None


def server_error_response(
    exc: BaseException,
) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
    """Status, JSON body and extra headers for an error the server could not handle."""
    classified = classify_server_error(exc) or ServerError()
    headers = []
    retry_after = getattr(classified, "retry_after", None)
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    return classified.status_code, error_payload(classified), headers


class InvalidParameter(ApiError):
    """A query parameter the client got wrong; the body names it in `parameter`."""

    default_detail = "A query parameter is invalid."
    default_code = "invalid_parameter"

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(detail, parameter=parameter)


class ArtifactNotFound(ApiError):
    status_code = status.HTTP_404_NOT_FOUND
    default_detail = "No such artifact in this session."
    default_code = "artifact_not_found"


class ArtifactFileMissing(ApiError):
    status_code = status.HTTP_404_NOT_FOUND
    default_detail = "This artifact is recorded, but its file is no longer in the session."
    default_code = "artifact_file_missing"


def error_payload(exc: exceptions.APIException) -> dict[str, Any]:
    """The JSON body for an API exception, with per-field errors for invalid bodies."""
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        if isinstance(detail, dict):
            return {"detail": "The request body is invalid.", "code": "invalid", "errors": detail}
        messages = detail if isinstance(detail, list) else [detail]
        return {"detail": " ".join(str(m) for m in messages), "code": "invalid"}
    payload: dict[str, Any] = {"detail": str(exc.detail)}
    payload["code"] = getattr(exc, "code", None) or _code_of(exc)
    payload.update(getattr(exc, "extra", {}))
    return payload


def _code_of(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    return codes if isinstance(codes, str) else exc.default_code


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        classified = classify_server_error(exc)
        if classified is None:
            return None
        exc = classified
    response = exception_handler(exc, context)
    if response is not None:
        response.data = error_payload(exc)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            response["Retry-After"] = str(retry_after)
    return response


class JSONErrorsMixin:
    """Views that render every error in the project's JSON shape, whatever the DRF settings."""

    def get_exception_handler(self) -> Any:
        return api_exception_handler
