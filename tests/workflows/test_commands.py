"""`manage.py recover_runs`: runs whose worker is gone are failed, live ones are left alone."""

from __future__ import annotations

import io
import socket
import subprocess

import pytest
from django.core.management import call_command
from django.utils import timezone

from attachments.sessions import create_session
from workflows.loader import load_workflow
from workflows.models import NodeRun, WorkflowRun
from workflows.runs import RESTART_REASON, create_run

pytestmark = pytest.mark.django_db


def active_run(worker: str) -> WorkflowRun:
    run = create_run(
        create_session(), load_workflow("review_csv"), task_prompt="x", variables={}, attachments=[]
    )
    WorkflowRun.objects.filter(pk=run.pk).update(
        status="waiting_for_input", worker=worker, heartbeat_at=timezone.now()
    )
    NodeRun.objects.filter(run=run, node_id="ask").update(status="waiting_for_input")
    return run


def test_fails_runs_of_dead_workers_only():
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = active_run(f"{socket.gethostname()}:{gone.pid}:old")
    alive = active_run("another-host:1:x")
    out = io.StringIO()
    call_command("recover_runs", stdout=out)
    assert "1 interrupted run(s) marked failed" in out.getvalue()
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert (dead.status, dead.error) == ("failed", RESTART_REASON)
    assert list(dead.nodes.values_list("status", flat=True)) == ["failed", "skipped"]
    assert dead.session.status == "failed"
    assert alive.status == "waiting_for_input"


def test_check_warehouse_reports_and_repairs_runs_left_in_flight():
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = active_run(f"{socket.gethostname()}:{gone.pid}:old")
    alive = active_run("another-host:1:x")
    out = io.StringIO()
    try:
        call_command("check_warehouse", stdout=out)
    except SystemExit:
        pass
    assert f"run left in flight by a stopped worker: {dead.run_id}" in out.getvalue()
    dead.refresh_from_db()
    assert dead.status == "waiting_for_input"  # only reported
    call_command("check_warehouse", "--repair", stdout=io.StringIO())
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert (dead.status, alive.status) == ("failed", "waiting_for_input")
