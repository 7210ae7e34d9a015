from __future__ import annotations

from typing import Any

from rest_framework import status
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .conf import conf
from .exceptions import JSONErrorsMixin
from .records import record_upload
from .serializers import AttachmentSerializer, SessionCreateSerializer, SessionSerializer
from .sessions import create_session, get_live_session, purge_session
from .uploads import FILE_FIELD, receive_upload


class LimitsView(JSONErrorsMixin, APIView):
    """The upload limits in force, so a client can check before it sends a byte."""

    def get(self, request: Request) -> Response:
        return Response(
            {
                "max_upload_bytes": conf.MAX_UPLOAD_BYTES,
                "upload_field": FILE_FIELD,
                "files_per_request": 1,
            }
        )


class SessionListView(JSONErrorsMixin, APIView):
    """Create a session, optionally with a proposed id."""

    parser_classes = [JSONParser]

    def post(self, request: Request) -> Response:
        body = SessionCreateSerializer(data=request.data if request.data else {})
        body.is_valid(raise_exception=True)
        session = create_session(body.validated_data.get("session_id"))
        return Response(SessionSerializer(session).data, status=status.HTTP_201_CREATED)


class SessionDetailView(JSONErrorsMixin, APIView):
    """A session's status and counts; DELETE purges its directory and records."""

    def get(self, request: Request, session_id: str) -> Response:
        return Response(SessionSerializer(get_live_session(session_id)).data)

    def delete(self, request: Request, session_id: str) -> Response:
        purge_session(get_live_session(session_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class UploadView(JSONErrorsMixin, APIView):
    """
    POST a file (multipart/form-data, field `file`) into the session; GET the
    session's attachments. The body is never parsed by DRF: it is either
    streamed to disk by `StreamingUploadMiddleware` or read by
    `AttachmentUploadHandler`, straight into the attachments directory.
    """

    parser_classes: list[Any] = []

    def get(self, request: Request, session_id: str) -> Response:
        session = get_live_session(session_id)
        attachments = session.attachments.filter(purged_at__isnull=True).select_related("session")
        return Response({"attachments": AttachmentSerializer(attachments, many=True).data})

    def post(self, request: Request, session_id: str) -> Response:
        session = get_live_session(session_id)
        received = receive_upload(request._request, session)
        attachment = record_upload(session, received)
        return Response(AttachmentSerializer(attachment).data, status=status.HTTP_201_CREATED)
