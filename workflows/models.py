from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from attachments.models import Session


class WorkflowRun(models.Model):
    """One execution of a workflow in a session; a session runs one at a time."""

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        RUNNING = "running", _("running")
        WAITING_FOR_INPUT = "waiting_for_input", _("waiting for input")
        COMPLETED = "completed", _("completed")
        FAILED = "failed", _("failed")
        CANCELLED = "cancelled", _("cancelled")

    ACTIVE = (Status.PENDING, Status.RUNNING, Status.WAITING_FOR_INPUT)

    run_id = models.CharField(_("run id"), max_length=80, unique=True)
    session = models.ForeignKey(
        Session, on_delete=models.CASCADE, related_name="workflow_runs", verbose_name=_("session")
    )
    workflow = models.CharField(_("workflow"), max_length=200)
    # The workflow's nodes as validated at execute time, so that editing the
    # YAML file does not change a run that has started.
    spec = models.JSONField(_("specification"), default=dict)
    task_prompt = models.TextField(_("task prompt"))
    variables = models.JSONField(_("variables"), default=dict, blank=True)
    attachment_ids = models.JSONField(_("attachments"), default=list, blank=True)
    status = models.CharField(
        _("status"), max_length=32, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    error = models.TextField(_("error"), blank=True, default="")
    cancel_requested = models.BooleanField(_("cancel requested"), default=False)
    worker = models.CharField(_("worker"), max_length=255, blank=True, default="")
    heartbeat_at = models.DateTimeField(_("heartbeat at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("workflow run")
        verbose_name_plural = _("workflow runs")
        ordering = ["-created_at", "-id"]
        constraints = [
            # Enforced by the database, so two workers cannot both start a run.
            models.UniqueConstraint(
                fields=["session"],
                condition=models.Q(status__in=["pending", "running", "waiting_for_input"]),
                name="workflow_one_active_run_per_session",
            )
        ]

    def __str__(self) -> str:
        return f"{self.workflow} ({self.run_id})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE


class NodeRun(models.Model):
    """One node of a run: its status, and what it passes to the nodes after it."""

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        RUNNING = "running", _("running")
        WAITING_FOR_INPUT = "waiting_for_input", _("waiting for input")
        COMPLETED = "completed", _("completed")
        FAILED = "failed", _("failed")
        CANCELLED = "cancelled", _("cancelled")
        SKIPPED = "skipped", _("skipped")

    run = models.ForeignKey(
        WorkflowRun, on_delete=models.CASCADE, related_name="nodes", verbose_name=_("run")
    )
    node_id = models.CharField(_("node id"), max_length=128)
    type = models.CharField(_("type"), max_length=16)
    position = models.PositiveIntegerField(_("position"))
    status = models.CharField(
        _("status"), max_length=32, choices=Status.choices, default=Status.PENDING
    )
    exit_code = models.IntegerField(_("exit code"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True, default="")
    # A python node's set_output() value; a human node's input.
    output = models.JSONField(_("output"), null=True, blank=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("node run")
        verbose_name_plural = _("node runs")
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "node_id"], name="workflow_node_unique_per_run")
        ]

    def __str__(self) -> str:
        return f"{self.node_id} ({self.status})"
