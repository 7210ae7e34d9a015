from __future__ import annotations

import re
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from attachments.access import (
    Credentials,
    credentials_from_request,
    owner_for_new_session,
    session_for,
)
from attachments.exceptions import JSONErrorsMixin, SessionNotFound
from attachments.openapi import errors, query
from attachments.parsers import JSONParser
from attachments.sessions import create_session
from attachments.views import AccessPolicyMixin

from . import runs
from .control import wake_run
from .exceptions import InvalidWorkflow, RunNotFound, UnknownAttachments, WorkflowNotFound
from .launcher import launch
from .loader import (
    Workflow,
    WorkflowError,
    WorkflowNotFoundError,
    find_workflow,
    list_workflows,
    load_workflow,
)
from .models import WorkflowRun
from .serializers import ExecuteSerializer, HumanInputSerializer, WorkflowRunSerializer

RUN_ID_RE = re.compile(r"^run_[A-Za-z0-9_-]{12,64}$")
MAX_LISTED_RUNS = 50


def _load(name: str) -> Workflow:
    try:
        return load_workflow(name)
    except WorkflowNotFoundError:
        raise WorkflowNotFound(f"No workflow named {name!r}.") from None
    except WorkflowError as exc:
        raise InvalidWorkflow(f"Workflow {name!r}, {exc}.", line=exc.line) from None


def _get_run(run_id: str, credentials: Credentials) -> WorkflowRun:
    """
    The run, if its session is one the caller may reach: a foreign run
    answers 404 `run_not_found`, like one that does not exist.
    """
    if not RUN_ID_RE.match(run_id):
        raise RunNotFound()
    try:
        run = WorkflowRun.objects.select_related("session").get(
            run_id=run_id, session__purged_at__isnull=True
        )
    except WorkflowRun.DoesNotExist:
        raise RunNotFound() from None
    try:
        session_for(credentials, run.session.session_id)
    except SessionNotFound:
        raise RunNotFound() from None
    # A run whose worker died answers as failed, whichever worker is asked.
    runs.fail_if_orphaned(run)
    return run


def _workflow_entry(workflow: Workflow) -> dict[str, Any]:
    return {
        "name": workflow.name,
        "file": workflow.path.name,
        "description": workflow.description,
        "nodes": [node.public() for node in workflow.nodes],
    }


class WorkflowListView(JSONErrorsMixin, APIView):
    """
    The workflows that can be executed. `workflows` lists their file names
    (`csv_summary.yaml`), as the reference platform's Web UI reads it;
    `details` has each one's name, file, description and nodes; malformed
    files are listed apart under `invalid`, with their fault.
    """

    @extend_schema(
        auth=[],
        responses=inline_serializer(
            "WorkflowList",
            {
                "workflows": serializers.ListField(
                    child=serializers.CharField(), help_text="File names, e.g. csv_summary.yaml."
                ),
                "details": serializers.ListField(
                    child=inline_serializer(
                        "WorkflowDetail",
                        {
                            "name": serializers.CharField(),
                            "file": serializers.CharField(),
                            "description": serializers.CharField(),
                            "nodes": serializers.ListField(child=serializers.DictField()),
                        },
                    )
                ),
                "invalid": serializers.ListField(
                    child=inline_serializer(
                        "InvalidWorkflow",
                        {
                            "name": serializers.CharField(),
                            "file": serializers.CharField(),
                            "detail": serializers.CharField(),
                            "line": serializers.IntegerField(allow_null=True),
                        },
                    )
                ),
            },
        ),
    )
    def get(self, request: Request) -> Response:
        details, invalid = [], []
        for item in list_workflows():
            if isinstance(item, Workflow):
                details.append(_workflow_entry(item))
            else:
                name, error = item
                invalid.append(
                    {
                        "name": name,
                        "file": find_workflow(name).name,
                        "detail": str(error),
                        "line": error.line,
                    }
                )
        return Response(
            {
                "workflows": [entry["file"] for entry in details],
                "details": details,
                "invalid": invalid,
            }
        )


class WorkflowDescriptionView(JSONErrorsMixin, APIView):
    """A workflow's description, by name or file name (`csv_summary` or `csv_summary.yaml`)."""

    @extend_schema(
        auth=[],
        operation_id="workflow_description",
        responses={
            200: inline_serializer("WorkflowDescription", {"description": serializers.CharField()}),
            **errors(400, 404),
        },
    )
    def get(self, request: Request, name: str) -> Response:
        return Response({"description": _load(name).description})


class ExecuteView(AccessPolicyMixin, APIView):
    """
    Start a workflow run in a session the caller may reach, or in a new one
    (whose `token` the answer carries, owned by a signed-in caller); 202 with its run id.
    """

    parser_classes = [JSONParser]

    @extend_schema(
        # A token is needed only to run in an existing session.
        auth=[{"sessionToken": []}, {}],
        request=ExecuteSerializer,
        responses={
            202: inline_serializer(
                "RunStarted",
                {
                    "status": serializers.CharField(),
                    "session_id": serializers.CharField(),
                    "run_id": serializers.CharField(),
                },
            ),
            **errors(400, 404, 409),
        },
    )
    def post(self, request: Request) -> Response:
        runs.ensure_recovered()
        credentials = credentials_from_request(request)
        body = ExecuteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        workflow = _load(data["workflow"])
        session_id = data.get("session_id")
        session = session_for(credentials, session_id) if session_id is not None else None
        attachment_ids = data.get("attachments", [])
        if session is None and attachment_ids:
            raise UnknownAttachments(
                "Attachments belong to a session: give its session_id.",
                attachments=attachment_ids,
            )
        attachments = runs.live_attachments(session, attachment_ids) if session else []
        # Created last, so a rejected request leaves no session behind.
        token = None
        if session is None:
            session = create_session(owner=owner_for_new_session(credentials))
            token = session.token
        run = runs.create_run(
            session,
            workflow,
            task_prompt=data["task_prompt"],
            variables=data.get("variables", {}),
            attachments=attachments,
        )
        launch(run.run_id)
        reply = {"status": "started", "session_id": session.session_id, "run_id": run.run_id}
        if token is not None:
            reply["token"] = token
        return Response(reply, status=status.HTTP_202_ACCEPTED)


class RunListView(AccessPolicyMixin, APIView):
    """A session's runs, newest first: `?session_id=`."""

    @extend_schema(
        operation_id="workflow_runs_list",
        parameters=[query("session_id", str, "The session whose runs to list.", required=True)],
        responses={
            200: inline_serializer("RunList", {"runs": WorkflowRunSerializer(many=True)}),
            **errors(400, 404),
        },
    )
    def get(self, request: Request) -> Response:
        session = session_for(
            credentials_from_request(request), request.query_params.get("session_id")
        )
        listed = (
            WorkflowRun.objects.filter(session=session)
            .select_related("session")
            .prefetch_related("nodes")[:MAX_LISTED_RUNS]
        )
        return Response({"runs": WorkflowRunSerializer(listed, many=True).data})


class RunDetailView(AccessPolicyMixin, APIView):
    """A run's status and its nodes' statuses."""

    @extend_schema(responses={200: WorkflowRunSerializer, **errors(404)})
    def get(self, request: Request, run_id: str) -> Response:
        run = _get_run(run_id, credentials_from_request(request))
        return Response(WorkflowRunSerializer(run).data)


class RunCancelView(AccessPolicyMixin, APIView):
    """Cancel a run: its running node's process group is killed; 409 once it has finished."""

    @extend_schema(request=None, responses={202: WorkflowRunSerializer, **errors(404, 409)})
    def post(self, request: Request, run_id: str) -> Response:
        run = runs.request_cancel(_get_run(run_id, credentials_from_request(request)))
        wake_run(run.run_id, "cancel")
        return Response(WorkflowRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class RunInputView(AccessPolicyMixin, APIView):
    """The REST twin of the /ws `human_input` message."""

    parser_classes = [JSONParser]

    @extend_schema(
        request=HumanInputSerializer,
        responses={202: OpenApiTypes.OBJECT, **errors(400, 404, 409)},
    )
    def post(self, request: Request, run_id: str) -> Response:
        run = _get_run(run_id, credentials_from_request(request))
        body = HumanInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        _run, node, value = runs.submit_human_input(
            run.session,
            body.validated_data["input"],
            body.validated_data.get("attachments", []),
            run_id=run.run_id,
        )
        wake_run(run.run_id, "input")
        return Response(
            {"status": "input_received", "run_id": run.run_id, "node_id": node.node_id, **value},
            status=status.HTTP_202_ACCEPTED,
        )
