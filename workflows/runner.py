"""
Executing a run: its nodes in order, the workspace hook around each, status
and logs to the session's /ws clients, and the session's lifecycle:

    created -> running <-> waiting_for_input -> completed | failed | cancelled

With `ATTACHMENTS_AUTO_CLEAN`, a completed run removes the session's
attachments/ directory and marks the records purged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from django.utils import timezone

from attachments.conf import conf as attachments_conf
from attachments.manifest import ManifestError
from attachments.manifest_sync import purge_attachments, sync_session_from_manifest
from attachments.models import Attachment, Session
from attachments.quotas import quota_overrun
from attachments.store import AttachmentStore

from . import runs
from .conf import conf
from .control import RunControl, read_input, send_to_session
from .loader import NodeSpec, Workflow
from .models import NodeRun, WorkflowRun
from .python_node import NodeOutcome, run_python_node
from .serializers import WorkflowRunSerializer
from .workspace import WorkspaceArtifactHook, WorkspaceChanges

logger = logging.getLogger(__name__)

Status = WorkflowRun.Status


async def execute_run(run_id: str) -> None:
    runner = await database_sync_to_async(Runner.load)(run_id)
    await runner.execute()


class Runner:
    def __init__(self, run: WorkflowRun) -> None:
        self.run = run
        self.session: Session = run.session
        self.workflow = Workflow.from_spec(run.spec)
        self.store = AttachmentStore(self.session.directory, self.session.session_id)
        self.nodes = {node.node_id: node for node in run.nodes.all()}
        rows = {
            a.attachment_id: a
            for a in Attachment.objects.filter(
                session=self.session, attachment_id__in=run.attachment_ids
            ).select_related("session")
        }
        attachments = [rows[i] for i in run.attachment_ids if i in rows]
        self.attachments = [runs.attachment_context(a) for a in attachments]
        self.outputs: dict[str, Any] = {}
        self.inputs: dict[str, Any] = {}
        self.human_input: dict[str, Any] | None = None

    @classmethod
    def load(cls, run_id: str) -> Runner:
        return cls(WorkflowRun.objects.select_related("session").get(run_id=run_id))

    async def execute(self) -> None:
        control = RunControl(self.run)
        hook = WorkspaceArtifactHook(
            self.store,
            on_change=self._mirror,
            watch=conf.WATCH_WORKSPACE,
            debounce=conf.WATCH_DEBOUNCE,
            ignored_dirs=conf.WORKSPACE_IGNORED_DIRS,
        )
        if not await database_sync_to_async(self._start)():
            return
        status, error = Status.FAILED, ""
        try:
            await self._announce()
            await control.start()
            await hook.start()
            status, error = await self._run_nodes(control, hook)
        except asyncio.CancelledError:
            # The loop is shutting down (the server stops): close the run
            # while we still can, then let the cancellation through.
            await self._close(control, hook, Status.FAILED, runs.STOP_REASON)
            raise
        except Exception:
            logger.exception("Run %s failed", self.run.run_id)
            # The details (and the server's paths) go to the log, not to the client.
            status, error = Status.FAILED, "Internal error; the server's log has the details."
        await self._close(control, hook, status, error)

    async def _run_nodes(self, control: RunControl, hook: WorkspaceArtifactHook) -> tuple[str, str]:
        for spec in self.workflow.nodes:
            if control.cancelled.is_set():
                return Status.CANCELLED, "Cancelled."
            node = self.nodes[spec.id]
            await hook.before_node(spec.id)
            await database_sync_to_async(self._node_started)(node)
            await self._announce()
            if spec.type == "python":
                outcome = await self._python(spec, control)
            else:
                outcome = await self._human(spec, node, control)
            await hook.after_node(spec.id)
            await database_sync_to_async(self._node_finished)(node, outcome)
            await self._announce()
            if outcome.status == "cancelled":
                return Status.CANCELLED, "Cancelled."
            if outcome.status != "completed":
                return Status.FAILED, f"Node {spec.id!r} failed: {outcome.error}"
            overrun = await database_sync_to_async(quota_overrun)(self.session)
            if overrun is not None:
                # What it wrote stays (it is recorded and listed); the run stops here.
                return Status.FAILED, (
                    f"Node {spec.id!r} wrote more than the session's quota allows: {overrun}. "
                    "Its files are kept; delete some to run again."
                )
        return Status.COMPLETED, ""

    async def _python(self, spec: NodeSpec, control: RunControl) -> NodeOutcome:
        async def log(stream: str, lines: list[str]) -> None:
            await send_to_session(
                self.session.session_id,
                {
                    "type": "node_log",
                    "data": {
                        "run_id": self.run.run_id,
                        "node_id": spec.id,
                        "stream": stream,
                        "lines": lines,
                    },
                },
            )

        outcome = await run_python_node(
            spec,
            self._context(spec.id),
            session_dir=self.store.session_dir,
            session_id=self.session.session_id,
            workspace=self.store.workspace,
            run_id=self.run.run_id,
            cancelled=control.cancelled,
            log=log,
        )
        if outcome.status == "completed":
            self.outputs[spec.id] = outcome.output
        return outcome

    async def _human(self, spec: NodeSpec, node: NodeRun, control: RunControl) -> NodeOutcome:
        await database_sync_to_async(self._waiting)(node)
        await self._announce()
        loop = asyncio.get_running_loop()
        timeout = spec.timeout or conf.HUMAN_INPUT_TIMEOUT
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            control.changed.clear()
            value = await database_sync_to_async(read_input)(node.pk)
            if value is not None:
                break
            if control.cancelled.is_set():
                return NodeOutcome("cancelled", error="Cancelled.")
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return NodeOutcome("failed", error=f"No input arrived within {timeout:g} s.")
            await control.wait(remaining)
        received = await database_sync_to_async(self._resolve_input)(value)
        self.inputs[spec.id] = received
        self.human_input = received
        self.outputs[spec.id] = value
        await database_sync_to_async(self._resumed)()
        return NodeOutcome("completed", output=value)

    def _context(self, node_id: str) -> dict[str, Any]:
        extra = [a for i in self.inputs.values() for a in i["attachments"]]
        return {
            "task_prompt": self.run.task_prompt,
            "variables": self.run.variables,
            "attachments": self.attachments + extra,
            "python_workspace_root": str(self.store.workspace),
            "session_id": self.session.session_id,
            "session_dir": str(self.store.session_dir),
            "run_id": self.run.run_id,
            "node_id": node_id,
            "workflow": self.workflow.name,
            "outputs": self.outputs,
            "inputs": self.inputs,
            "human_input": self.human_input,
        }

    async def _mirror(self, changes: WorkspaceChanges | None = None) -> None:
        """Mirror the manifest into the ORM: the row changes are what emit artifact events."""
        try:
            await database_sync_to_async(self._sync)()
        except ManifestError:
            logger.exception("Run %s: the manifest cannot be read", self.run.run_id)

    def _sync(self) -> None:
        if (
            self.session.directory.is_dir()
            and Session.objects.live().filter(pk=self.session.pk).exists()
        ):
            sync_session_from_manifest(self.session)

    async def _close(
        self, control: RunControl, hook: WorkspaceArtifactHook, status: str, error: str
    ) -> None:
        for stop in (hook.stop, control.stop):
            with contextlib.suppress(Exception):
                await stop()
        await self._mirror()
        await database_sync_to_async(runs.finish_run)(self.run.pk, status, error)
        if status == Status.COMPLETED and attachments_conf.AUTO_CLEAN:
            await database_sync_to_async(self._auto_clean)()
        await self._announce()

    def _auto_clean(self) -> None:
        if Session.objects.live().filter(pk=self.session.pk).exists():
            purge_attachments(self.session)

    # Database steps, run in database_sync_to_async threads.

    def _start(self) -> bool:
        now = timezone.now()
        started = WorkflowRun.objects.filter(pk=self.run.pk, status=Status.PENDING).update(
            status=Status.RUNNING, started_at=now, heartbeat_at=now
        )
        if not started:
            return False
        runs.set_session_status(self.session.pk, Session.Status.RUNNING)
        return True

    def _node_started(self, node: NodeRun) -> None:
        node.status = NodeRun.Status.RUNNING
        node.started_at = timezone.now()
        node.save(update_fields=["status", "started_at"])

    def _waiting(self, node: NodeRun) -> None:
        node.status = NodeRun.Status.WAITING_FOR_INPUT
        node.save(update_fields=["status"])
        WorkflowRun.objects.filter(pk=self.run.pk).update(status=Status.WAITING_FOR_INPUT)
        runs.set_session_status(self.session.pk, Session.Status.WAITING_FOR_INPUT)

    def _resumed(self) -> None:
        WorkflowRun.objects.filter(pk=self.run.pk, status=Status.WAITING_FOR_INPUT).update(
            status=Status.RUNNING
        )
        runs.set_session_status(self.session.pk, Session.Status.RUNNING)

    def _node_finished(self, node: NodeRun, outcome: NodeOutcome) -> None:
        node.status = outcome.status
        node.exit_code = outcome.exit_code
        node.error = outcome.error
        if outcome.output is not None:
            node.output = outcome.output
        node.finished_at = timezone.now()
        node.save(update_fields=["status", "exit_code", "error", "output", "finished_at"])

    def _resolve_input(self, value: dict[str, Any]) -> dict[str, Any]:
        ids = value.get("attachments") or []
        rows = {
            a.attachment_id: a
            for a in Attachment.objects.filter(
                session=self.session, attachment_id__in=ids, purged_at__isnull=True
            ).select_related("session")
        }
        return {
            "input": value.get("input", ""),
            "attachments": [runs.attachment_context(rows[i]) for i in ids if i in rows],
        }

    async def _announce(self) -> None:
        data = await database_sync_to_async(self._status_payload)()
        await send_to_session(self.session.session_id, {"type": "run_status", "data": data})

    def _status_payload(self) -> dict[str, Any]:
        run = WorkflowRun.objects.select_related("session").get(pk=self.run.pk)
        payload: dict[str, Any] = json.loads(json.dumps(WorkflowRunSerializer(run).data))
        return payload
