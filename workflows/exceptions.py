"""The workflow API's errors, in the project's JSON shape (see attachments.exceptions)."""

from __future__ import annotations

from rest_framework import status

from attachments.exceptions import ApiError


class WorkflowNotFound(ApiError):
    status_code = status.HTTP_404_NOT_FOUND
    default_detail = "No such workflow."
    default_code = "workflow_not_found"


class InvalidWorkflow(ApiError):
    default_detail = "The workflow file is malformed."
    default_code = "invalid_workflow"


class UnknownAttachments(ApiError):
    default_detail = "Unknown attachment ids for this session."
    default_code = "unknown_attachments"


class RunInProgress(ApiError):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "This session is already running a workflow."
    default_code = "run_in_progress"


class RunNotFound(ApiError):
    status_code = status.HTTP_404_NOT_FOUND
    default_detail = "No such run."
    default_code = "run_not_found"


class RunFinished(ApiError):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "This run has already finished."
    default_code = "run_finished"


class NotWaitingForInput(ApiError):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "No run of this session is waiting for input."
    default_code = "not_waiting_for_input"


class InvalidInput(ApiError):
    default_detail = "The input is invalid."
    default_code = "invalid"
