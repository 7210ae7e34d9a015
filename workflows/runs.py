"""
Run records: creating a run, human input, cancel, finishing, and failing
the runs whose worker died. Synchronous ORM code, shared by the views, the
/ws consumer and the runner (through `database_sync_to_async`).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from attachments.models import Attachment, Session
from attachments.paths import safe_join

from .conf import conf
from .exceptions import (
    InvalidInput,
    NotWaitingForInput,
    RunFinished,
    RunInProgress,
    UnknownAttachments,
)
from .identifiers import new_run_id, worker_id
from .loader import Workflow
from .models import NodeRun, WorkflowRun
from .running import is_running_here

RESTART_REASON = "The server restarted while this run was in flight."
STOP_REASON = "The server stopped while this run was in flight."

_recovered = False
_recovery_lock = threading.Lock()


def live_attachments(session: Session, attachment_ids: Iterable[str]) -> list[Attachment]:
    """The session's attachments with these ids, in order; unknown, foreign or purged ids: 400."""
    wanted = list(dict.fromkeys(attachment_ids))
    if not wanted:
        return []
    found = {
        a.attachment_id: a
        for a in Attachment.objects.filter(
            session=session, attachment_id__in=wanted, purged_at__isnull=True
        ).select_related("session")
    }
    missing = [attachment_id for attachment_id in wanted if attachment_id not in found]
    if missing:
        raise UnknownAttachments(
            f"Unknown attachment ids for this session: {', '.join(missing)}.", attachments=missing
        )
    return [found[attachment_id] for attachment_id in wanted]


def attachment_context(attachment: Attachment) -> dict[str, Any]:
    """What a node learns about an attachment, with its absolute path."""
    return {
        "attachment_id": attachment.attachment_id,
        "name": attachment.name,
        "mime": attachment.mime,
        "kind": attachment.kind,
        "size": attachment.size,
        "sha256": attachment.sha256,
        "source": attachment.source,
        "relative_path": attachment.path,
        "path": str(safe_join(attachment.session.directory, attachment.path)),
    }


def create_run(
    session: Session,
    workflow: Workflow,
    *,
    task_prompt: str,
    variables: dict[str, Any],
    attachments: list[Attachment],
) -> WorkflowRun:
    """A pending run with its nodes; 409 if the session already runs one."""
    ensure_recovered()
    try:
        with transaction.atomic():
            run = WorkflowRun.objects.create(
                run_id=new_run_id(),
                session=session,
                workflow=workflow.name,
                spec=workflow.to_spec(),
                task_prompt=task_prompt,
                variables={**workflow.variables, **variables},
                attachment_ids=[a.attachment_id for a in attachments],
                worker=worker_id(),
                heartbeat_at=timezone.now(),
            )
            NodeRun.objects.bulk_create(
                NodeRun(run=run, node_id=node.id, type=node.type, position=position)
                for position, node in enumerate(workflow.nodes)
            )
    except IntegrityError:
        active = WorkflowRun.objects.filter(session=session, status__in=WorkflowRun.ACTIVE).first()
        if active is not None and fail_if_orphaned(active):
            return create_run(
                session,
                workflow,
                task_prompt=task_prompt,
                variables=variables,
                attachments=attachments,
            )
        raise RunInProgress(
            "This session is already running a workflow.",
            run_id=active.run_id if active else None,
        ) from None
    return run


def request_cancel(run: WorkflowRun) -> WorkflowRun:
    """Ask the run's worker to stop it; 409 if it has finished."""
    if not run.is_active or fail_if_orphaned(run):
        run.refresh_from_db()
        raise RunFinished(f"This run has already {run.status}.", status=run.status)
    WorkflowRun.objects.filter(pk=run.pk).update(cancel_requested=True)
    run.cancel_requested = True
    return run


def submit_human_input(
    session: Session, text: Any, attachment_ids: Any, run_id: Any = None
) -> tuple[WorkflowRun, NodeRun, dict[str, Any]]:
    """
    Hand a human node its input. The text must be a non-blank string and the
    attachment ids the session's own; the first input wins.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("'input' must be a non-blank string.", errors={"input": ["required"]})
    if attachment_ids is None:
        attachment_ids = []
    if not isinstance(attachment_ids, list) or not all(isinstance(a, str) for a in attachment_ids):
        raise InvalidInput(
            "'attachments' must be a list of attachment ids.", errors={"attachments": ["list"]}
        )
    attachments = live_attachments(session, attachment_ids)
    ensure_recovered()
    waiting = NodeRun.objects.filter(
        run__session=session,
        run__status=WorkflowRun.Status.WAITING_FOR_INPUT,
        status=NodeRun.Status.WAITING_FOR_INPUT,
        output__isnull=True,
    ).select_related("run")
    if run_id is not None:
        waiting = waiting.filter(run__run_id=run_id)
    node = waiting.first()
    if node is None:
        raise NotWaitingForInput()
    value = {"input": text, "attachments": [a.attachment_id for a in attachments]}
    # A conditional update: of two inputs racing on two workers, one wins.
    claimed = NodeRun.objects.filter(pk=node.pk, output__isnull=True).update(output=value)
    if not claimed:
        raise NotWaitingForInput("This node has already received its input.")
    node.output = value
    return node.run, node, value


def finish_run(run_pk: int, status: str, error: str) -> WorkflowRun:
    """Close the run and its unfinished nodes, and give the session the run's status."""
    now = timezone.now()
    with transaction.atomic():
        run = WorkflowRun.objects.select_for_update().select_related("session").get(pk=run_pk)
        if not run.is_active:
            return run  # already closed, e.g. failed by a worker that thought this one dead
        unfinished = (NodeRun.Status.RUNNING, NodeRun.Status.WAITING_FOR_INPUT)
        for node in run.nodes.filter(status__in=(*unfinished, NodeRun.Status.PENDING)):
            if node.status == NodeRun.Status.PENDING:
                node.status = NodeRun.Status.SKIPPED
            else:
                node.status = (
                    NodeRun.Status.CANCELLED
                    if status == WorkflowRun.Status.CANCELLED
                    else NodeRun.Status.FAILED
                )
                node.error = node.error or error
                node.finished_at = now
            node.save(update_fields=["status", "error", "finished_at"])
        run.status = status
        run.error = error
        run.finished_at = now
        run.save(update_fields=["status", "error", "finished_at"])
        Session.objects.filter(pk=run.session_id, purged_at__isnull=True).update(
            status=status, updated_at=now
        )
    return run


def set_session_status(session_pk: int, status: str) -> None:
    Session.objects.filter(pk=session_pk, purged_at__isnull=True).update(
        status=status, updated_at=timezone.now()
    )


def is_orphaned(run: WorkflowRun) -> bool:
    """Whether no live worker is running this active run."""
    if not run.is_active:
        return False
    host, _, rest = run.worker.partition(":")
    pid_text, _, _token = rest.partition(":")
    if run.worker == worker_id():
        # A pending run of this process may be about to launch.
        return run.status != WorkflowRun.Status.PENDING and not is_running_here(run.run_id)
    if host == socket.gethostname() and pid_text.isdigit() and not _pid_alive(int(pid_text)):
        return True
    beat = run.heartbeat_at or run.created_at
    return timezone.now() - beat > timedelta(seconds=conf.HEARTBEAT_TIMEOUT)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_if_orphaned(run: WorkflowRun, reason: str = RESTART_REASON) -> bool:
    if not is_orphaned(run):
        return False
    finish_run(run.pk, WorkflowRun.Status.FAILED, reason)
    run.refresh_from_db()
    return True


def interrupted_runs(repair: bool) -> list[str]:
    """Active runs whose worker is gone; with `repair`, marked failed (a reconciliation step)."""
    if repair:
        return fail_interrupted_runs()
    active = WorkflowRun.objects.filter(status__in=WorkflowRun.ACTIVE)
    return [run.run_id for run in active if is_orphaned(run)]


def fail_interrupted_runs() -> list[str]:
    """Mark failed every active run whose worker is gone; returns their ids."""
    failed = []
    for run in WorkflowRun.objects.filter(status__in=WorkflowRun.ACTIVE):
        if fail_if_orphaned(run):
            failed.append(run.run_id)
    return failed


def ensure_recovered() -> None:
    """Once per process, before the first workflow request: fail what a restart interrupted."""
    global _recovered
    if _recovered:
        return
    with _recovery_lock:
        if not _recovered:
            fail_interrupted_runs()
            _recovered = True
