from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.http.response import HttpResponseBase
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import links, resumable
from .access import (
    DjangoUserAuthentication,
    authorize_request,
    credentials_from_request,
    may_propose_session_id,
    owner_for_new_session,
)
from .archive import SessionArchive, changed_paths
from .artifact_lookup import resolve_artifact
from .body_streams import data_uri
from .buffering import buffered_body_limit
from .conf import conf
from .exceptions import InvalidParameter, JSONErrorsMixin, SessionIdNotAllowed
from .models import Session
from .openapi import SESSION_ERRORS, binary, errors
from .openapi import query as query_param
from .parameters import boolean, choice, non_negative_int
from .parsers import JSONParser
from .quotas import Usage, quota_fields, usage
from .selection import FileFilters
from .serializers import (
    ArtifactMetaSerializer,
    AttachmentSerializer,
    CreatedSessionSerializer,
    DownloadParameters,
    SessionCreateSerializer,
    SessionSerializer,
)
from .serving import serve_archive, serve_artifact
from .sessions import create_session, purge_session
from .throttling import SessionCreateThrottle
from .uploads import FILE_FIELD, accept_upload, receive_upload, request_chunks, streamed_upload


class LimitsView(JSONErrorsMixin, APIView):
    """
    The upload limit and the per-session quotas in force, so a client can
    check before it sends a byte; with `?session_id=`, also what is left of
    that session's quotas.
    """

    @extend_schema(
        auth=[{"sessionToken": []}, {}],
        parameters=[
            query_param("session_id", str, "Also report what is left of this session's quotas.")
        ],
        responses={
            200: inline_serializer(
                "Limits",
                {
                    "max_upload_bytes": serializers.IntegerField(
                        allow_null=True, help_text="Largest multipart upload (null: no limit)."
                    ),
                    "max_request_bytes": serializers.IntegerField(
                        allow_null=True,
                        help_text="Largest request body, where the server buffers bodies "
                        "(Daphne); null where it streams them.",
                    ),
                    "resumable_max_upload_bytes": serializers.IntegerField(
                        allow_null=True,
                        help_text="Largest upload by the resumable (tus) endpoint, sent in "
                        "chunks of at most max_request_bytes.",
                    ),
                    "upload_field": serializers.CharField(),
                    "files_per_request": serializers.IntegerField(),
                    "quota_bytes": serializers.IntegerField(allow_null=True),
                    "quota_files": serializers.IntegerField(allow_null=True),
                    "used_bytes": serializers.IntegerField(required=False),
                    "used_files": serializers.IntegerField(required=False),
                    "remaining_bytes": serializers.IntegerField(required=False, allow_null=True),
                    "remaining_files": serializers.IntegerField(required=False, allow_null=True),
                },
            ),
            **SESSION_ERRORS,
        },
    )
    def get(self, request: Request) -> Response:
        request_limit = buffered_body_limit()
        multipart_limit = conf.MAX_UPLOAD_BYTES
        if request_limit is not None:
            multipart_limit = min(multipart_limit or request_limit, request_limit)
        limits: dict[str, Any] = {
            "max_upload_bytes": multipart_limit,
            "max_request_bytes": request_limit,
            "resumable_max_upload_bytes": conf.MAX_UPLOAD_BYTES,
            "upload_field": FILE_FIELD,
            "files_per_request": 1,
        }
        session_id = request.query_params.get("session_id")
        current = (
            usage(authorize_request(request, session_id)) if session_id is not None else Usage(0, 0)
        )
        fields = quota_fields(current)
        if session_id is None:
            fields = {k: v for k, v in fields.items() if k in {"quota_bytes", "quota_files"}}
        return Response({**limits, **fields})


class AccessPolicyMixin(JSONErrorsMixin):
    """
    Views whose access rule is `attachments.access`, whatever the host's DRF
    defaults: a session's token or JWT is not a DRF user, and a signed-in
    user is read (with its CSRF check) from the Django request.
    """

    authentication_classes: list[Any] = [DjangoUserAuthentication]
    permission_classes: list[Any] = []


class SessionScopedMixin(AccessPolicyMixin):
    """Views of one session, named by the `session_id` URL argument."""

    kwargs: dict[str, Any]
    request: Request

    def get_session(self, target: links.LinkTarget | None = None) -> Session:
        """The session, if the caller may reach it; else the 404 of an unknown session."""
        return authorize_request(self.request, self.kwargs["session_id"], target)


class SessionListView(AccessPolicyMixin, APIView):
    """
    Create a session. Anyone may; the answer carries the session's `token`,
    the only time it is shown. A signed-in user owns the session created.
    Proposing an id needs a signed-in user or a JWT naming it (token policy):
    else 403 `session_id_not_allowed`, whether or not the id exists.
    """

    parser_classes = [JSONParser]
    throttle_classes = [SessionCreateThrottle]

    @extend_schema(
        auth=[],
        request=SessionCreateSerializer,
        responses={201: CreatedSessionSerializer, **errors(400, 403, 409, 429)},
    )
    def post(self, request: Request) -> Response:
        credentials = credentials_from_request(request)
        owner = owner_for_new_session(credentials)
        body = SessionCreateSerializer(data=request.data if request.data else {})
        body.is_valid(raise_exception=True)
        proposed = body.validated_data.get("session_id")
        if proposed is not None and not may_propose_session_id(credentials, proposed):
            # Refused before the id is looked up: the answer is the same whether it exists.
            raise SessionIdNotAllowed()
        session = create_session(proposed, owner=owner)
        return Response(CreatedSessionSerializer(session).data, status=status.HTTP_201_CREATED)


class SessionDetailView(SessionScopedMixin, APIView):
    """A session's status and counts; DELETE purges its directory and records."""

    @extend_schema(responses={200: SessionSerializer, **SESSION_ERRORS})
    def get(self, request: Request, session_id: str) -> Response:
        return Response(SessionSerializer(self.get_session()).data)

    @extend_schema(responses={204: None, **SESSION_ERRORS})
    def delete(self, request: Request, session_id: str) -> Response:
        purge_session(self.get_session())
        return Response(status=status.HTTP_204_NO_CONTENT)


class UploadView(SessionScopedMixin, APIView):
    """
    POST a file (multipart/form-data, field `file`) into the session; GET the
    session's attachments. The body is never parsed by DRF: the upload
    service (`attachments.uploads`) receives it, streamed by
    `StreamingUploadMiddleware` or read here, straight into staging.
    """

    parser_classes: list[Any] = []

    @extend_schema(
        responses={
            200: inline_serializer(
                "AttachmentList", {"attachments": AttachmentSerializer(many=True)}
            ),
            **SESSION_ERRORS,
        }
    )
    def get(self, request: Request, session_id: str) -> Response:
        session = self.get_session()
        attachments = session.attachments.filter(purged_at__isnull=True).select_related("session")
        return Response({"attachments": AttachmentSerializer(attachments, many=True).data})

    @extend_schema(
        request={
            "multipart/form-data": inline_serializer(
                "Upload", {"file": serializers.FileField(help_text="One file.")}
            )
        },
        responses={201: AttachmentSerializer, **errors(400, 404, 413, 415, 422, 503, 507)},
    )
    def post(self, request: Request, session_id: str) -> Response:
        streamed = streamed_upload(request._request)
        if streamed is not None and streamed.error is not None:
            raise streamed.error
        # A streamed body's session was resolved and authorised before it was read.
        session = streamed.session if streamed is not None else None
        session = session or self.get_session()
        received = receive_upload(request._request, session)
        attachment = accept_upload(session, received)
        return Response(AttachmentSerializer(attachment).data, status=status.HTTP_201_CREATED)


class FileResponseMixin(SessionScopedMixin):
    """
    Views that answer with file bytes. A client's Accept header never turns
    a download into a 406: the file is what it is, and errors are JSON.
    """

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        return super().perform_content_negotiation(request, force=True)  # type: ignore[misc]


class ArtifactView(FileResponseMixin, APIView):
    """
    One artifact of the session, by `art_` or `att_` id: `mode=meta` (the
    default) gives its metadata, `mode=stream` its bytes, `inline` or, with
    `download=true`, as an attachment. GET and HEAD. A signed link's `sig`
    made for this session and this id is accepted instead of a credential.
    """

    @extend_schema(
        parameters=[
            query_param("mode", str, "meta (default) or stream", enum=["meta", "stream"]),
            query_param("download", bool, "Send as an attachment rather than inline."),
        ],
        responses={
            # The metadata first: a generated client reads this operation as
            # JSON. `.../content` is the same bytes as an operation of its own.
            (200, "application/json"): ArtifactMetaSerializer,
            (200, "*/*"): binary("mode=stream: the bytes, with the file's own Content-Type."),
            (206, "*/*"): binary("One range of the bytes."),
            304: None,
            **errors(400, 404, 412, 416),
        },
    )
    def get(self, request: Request, session_id: str, artifact_id: str) -> HttpResponseBase:
        mode = choice(request.query_params, "mode", ("meta", "stream"), default="meta")
        download = boolean(request.query_params, "download", default=False)
        # A signed link opens the mode and disposition it was made for, no other.
        variant = links.artifact_variant(mode, download)
        session = self.get_session(links.LinkTarget(session_id, artifact_id, variant))
        artifact = resolve_artifact(session, artifact_id)
        if mode == "stream":
            return serve_artifact(request._request, artifact, as_attachment=download)
        with artifact.open() as file:
            inline = data_uri(file, artifact.mime, conf.INLINE_DATA_URI_MAX_BYTES)
        return Response(artifact.metadata(data_uri=inline))


class ArtifactContentView(FileResponseMixin, APIView):
    """
    The artifact's bytes: the same answer as `?mode=stream`, as an operation
    of its own, so that a client generated from the schema gets bytes here
    and typed metadata from the artifact itself. GET and HEAD.
    """

    @extend_schema(
        operation_id="sessions_artifacts_content",
        parameters=[query_param("download", bool, "Send as an attachment rather than inline.")],
        responses={
            (200, "*/*"): binary("The bytes, with the file's own Content-Type."),
            (206, "*/*"): binary("One range of the bytes."),
            304: None,
            **errors(400, 404, 412, 416),
        },
    )
    def get(self, request: Request, session_id: str, artifact_id: str) -> HttpResponseBase:
        session = self.get_session(links.LinkTarget(session_id, artifact_id))
        download = boolean(request.query_params, "download", default=False)
        artifact = resolve_artifact(session, artifact_id)
        return serve_artifact(request._request, artifact, as_attachment=download)


class SessionDownloadView(FileResponseMixin, APIView):
    """
    The whole session directory as `session_<id>.zip`, streamed while it is
    built. Filters: `include_ext`, `include_mime`, `max_size`; `after` for
    the files changed since an event cursor; `compress=false` for a stored
    zip with a known length that resumes with Range. GET and HEAD. A signed
    link's `sig` made for this session's zip is accepted instead of a credential.
    """

    @extend_schema(
        parameters=[DownloadParameters],
        responses={
            (200, "application/zip"): binary("session_<id>.zip"),
            (206, "application/zip"): binary("A range of a stored zip."),
            304: None,
            **errors(400, 404, 410, 412, 416),
        },
    )
    def get(self, request: Request, session_id: str) -> HttpResponseBase:
        session = self.get_session(links.LinkTarget(session_id))
        params = DownloadParameters.read(request.query_params)
        after = params.get("after")
        only_paths = changed_paths(session, after) if after is not None else None
        archive = SessionArchive.for_session(
            session,
            FileFilters.from_parameters(params),
            compress=params["compress"],
            only_paths=only_paths,
        )
        return serve_archive(request._request, archive, f"session_{session.session_id}.zip")


class SignedLinkMixin(SessionScopedMixin):
    """Views that mint a signed link, for a caller who holds a credential (not a link)."""

    def link_response(
        self, request: Request, target: links.LinkTarget, view_name: str, params: dict[str, str]
    ) -> Response:
        requested = non_negative_int(request.query_params, "expires_in")
        if requested == 0:
            raise InvalidParameter("expires_in", "'expires_in' must be at least 1 second.")
        expires_in = links.link_lifetime(requested)
        kwargs = {"session_id": target.session_id}
        if target.artifact_id is not None:
            kwargs["artifact_id"] = target.artifact_id
        params = {**params, links.SIGNATURE_PARAM: links.sign(target, expires_in)}
        path = f"{reverse(view_name, kwargs=kwargs)}?{urlencode(params)}"
        return Response(
            {
                "url": request.build_absolute_uri(path),
                "expires_in": expires_in,
                "expires_at": timezone.now() + timedelta(seconds=expires_in),
            }
        )


SIGNED_LINK = inline_serializer(
    "SignedLink",
    {
        "url": serializers.URLField(),
        "expires_in": serializers.IntegerField(),
        "expires_at": serializers.DateTimeField(),
    },
)
EXPIRES_IN = query_param("expires_in", int, "Seconds the link stays valid (capped by the server).")


class ArtifactLinkView(SignedLinkMixin, APIView):
    """
    A signed link to one artifact's bytes (`mode=stream`, with `download=true`
    if asked), valid for `expires_in` seconds (at most
    `ATTACHMENTS_SIGNED_LINK_MAX_AGE`, the default) for anyone who holds it.
    """

    @extend_schema(
        parameters=[EXPIRES_IN, query_param("download", bool, "Link to a download, not inline.")],
        responses={200: SIGNED_LINK, **errors(400, 404)},
    )
    def get(self, request: Request, session_id: str, artifact_id: str) -> Response:
        session = self.get_session()
        artifact = resolve_artifact(session, artifact_id)
        params = {"mode": "stream"}
        download = boolean(request.query_params, "download", default=False)
        if download:
            params["download"] = "true"
        variant = links.artifact_variant("stream", download)
        target = links.LinkTarget(session.session_id, artifact.artifact_id, variant)
        return self.link_response(request, target, "attachments:artifact", params)


class SessionDownloadLinkView(SignedLinkMixin, APIView):
    """A signed link to the session zip; the zip's filters may be added to it."""

    @extend_schema(parameters=[EXPIRES_IN], responses={200: SIGNED_LINK, **errors(400, 404)})
    def get(self, request: Request, session_id: str) -> Response:
        session = self.get_session()
        target = links.LinkTarget(session.session_id)
        return self.link_response(request, target, "attachments:session-download", {})


class ResumableUploadMixin(SessionScopedMixin):
    """
    The tus 1.0 endpoints (`attachments.resumable`). Every answer carries
    Tus-Resumable; every request but OPTIONS must send it.
    """

    parser_classes: list[Any] = []

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        if request.method != "OPTIONS":
            resumable.check_version(request.headers.get("Tus-Resumable"))

    def finalize_response(
        self, request: Request, response: HttpResponseBase, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        response["Tus-Resumable"] = resumable.TUS_VERSION
        return response

    def options(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = Response(status=status.HTTP_204_NO_CONTENT)
        response["Tus-Version"] = resumable.TUS_VERSION
        response["Tus-Extension"] = resumable.EXTENSIONS
        response["Tus-Checksum-Algorithm"] = ",".join(sorted(resumable.CHECKSUMS))
        limit = resumable.remaining_bytes(self.get_session())
        if limit is not None:
            response["Tus-Max-Size"] = str(limit)
        return response

    def patch_body(self, request: Request, writer: Any) -> Any:
        """Append the request's body with `writer`; the upload, recorded if that was all of it."""
        whole = False
        try:
            for chunk in request_chunks(request._request, conf.UPLOAD_BUFFER_BYTES):
                if writer.renewal_due:
                    writer.renew()
                writer.write(chunk)
            whole = True
        finally:
            upload = resumable.finish_patch(writer, whole)
        return upload

    def upload_headers(self, upload: Any, response: HttpResponseBase) -> HttpResponseBase:
        for name, value in resumable.response_headers(upload).items():
            response[name] = value
        return response


class ResumableUploadsView(ResumableUploadMixin, APIView):
    """
    tus 1.0: OPTIONS tells what the server supports and the largest upload
    the session takes now (`Tus-Max-Size`); POST creates an upload
    (`Upload-Length`, `Upload-Metadata` with `filename`), with its first bytes
    in the body when sent as application/offset+octet-stream.
    """

    @extend_schema(
        request=None,
        responses={201: None, **errors(400, 404, 409, 412, 413, 415, 423, 460, 507)},
    )
    def post(self, request: Request, session_id: str) -> Response:
        session = self.get_session()
        if request.headers.get("Upload-Defer-Length"):
            raise resumable.InvalidTusHeader(
                "Upload-Defer-Length", "Send Upload-Length: deferred lengths are not supported."
            )
        length = resumable.parse_length("Upload-Length", request.headers.get("Upload-Length"))
        metadata = resumable.parse_metadata(request.headers.get("Upload-Metadata"))
        upload = resumable.create_upload(session, length, metadata)
        response = Response(status=status.HTTP_201_CREATED)
        response["Location"] = request.build_absolute_uri(
            reverse("attachments:tus-upload", args=[session.session_id, upload.upload_id])
        )
        if request.content_type == resumable.OFFSET_CONTENT_TYPE or length == 0:
            checksum = resumable.parse_checksum(request.headers.get("Upload-Checksum"))
            upload = self.patch_body(request, resumable.PatchWriter(upload, 0, checksum))
        return self.upload_headers(upload, response)


class ResumableUploadView(ResumableUploadMixin, APIView):
    """
    tus 1.0: one upload. HEAD gives its offset, PATCH appends bytes at
    `Upload-Offset` (the last byte records the attachment), DELETE removes it.
    """

    def get_upload(self) -> Any:
        return resumable.find_upload(self.get_session(), self.kwargs["upload_id"])

    @extend_schema(request=None, responses={200: None, **errors(404, 410, 412)})
    def head(self, request: Request, session_id: str, upload_id: str) -> Response:
        return self.upload_headers(self.get_upload(), Response(status=status.HTTP_200_OK))

    @extend_schema(
        request={resumable.OFFSET_CONTENT_TYPE: OpenApiTypes.BINARY},
        responses={204: None, **errors(400, 404, 409, 410, 412, 413, 415, 422, 423, 460, 507)},
    )
    def patch(self, request: Request, session_id: str, upload_id: str) -> Response:
        streamed = streamed_upload(request._request)
        if streamed is not None:
            # The ASGI fast path wrote the body already (attachments.uploads_asgi).
            if streamed.error is not None:
                raise streamed.error
            upload = streamed.resumable
        else:
            writer = resumable.open_patch(self.get_session(), upload_id, request.headers)
            upload = self.patch_body(request, writer)
        return self.upload_headers(upload, Response(status=status.HTTP_204_NO_CONTENT))

    @extend_schema(request=None, responses={204: None, **errors(404, 410, 412, 423)})
    def delete(self, request: Request, session_id: str, upload_id: str) -> Response:
        session = self.get_session()
        upload = resumable.find_upload(session, upload_id)
        resumable.terminate_unless_busy(session, upload)
        return Response(status=status.HTTP_204_NO_CONTENT)
