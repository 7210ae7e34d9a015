"""Runs executed in-process: nodes, the workspace hook, logs, human input, limits, cancel."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from attachments.models import Attachment, Session
from tests.processes import alive
from workflows.models import WorkflowRun

from .helpers import (
    Listener,
    asgi_client,
    execute,
    finished,
    run_status,
    until,
    upload,
    write_workflow,
)

pytestmark = pytest.mark.django_db(transaction=True)

CSV = b"city,population,area\nParis,2148000,105.4\nLyon,516000,47.9\nNice,342000,71.9\n"


@pytest.fixture(autouse=True)
async def close_connections():
    """The ORM calls made from these async tests leave connections in asgiref's thread."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def workflows_dir(tmp_path, settings):
    settings.WORKFLOWS_DIR = tmp_path / "workflows"
    settings.WORKFLOWS_CONTROL_POLL_SECONDS = 0.2
    (tmp_path / "workflows").mkdir()
    return tmp_path / "workflows"


def manifest(session_id: str, warehouse) -> list[dict]:
    path = warehouse / f"session_{session_id}/code_workspace/attachments/attachments_manifest.json"
    return json.loads(path.read_text())["attachments"]


async def test_csv_summary_registers_its_outputs_and_streams_logs(warehouse):
    async with asgi_client() as client:
        session_id = (await client.post("/api/sessions", json={})).json()["session_id"]
        csv = await upload(client, session_id, "cities.csv", CSV)
        async with Listener(session_id) as ws:
            started = await execute(
                client,
                workflow="csv_summary",
                session_id=session_id,
                attachments=[csv["attachment_id"]],
            )
            run = await finished(client, started["run_id"])
            await ws.wait_for("run_status", lambda m: m["data"]["status"] == "completed")
        assert run["status"] == "completed", run
        assert [(n["node_id"], n["status"], n["exit_code"]) for n in run["nodes"]] == [
            ("summarise", "completed", 0)
        ]
        output = run["nodes"][0]["output"]
        assert output["rows"] == 3 and output["columns"] == 3

        workspace = warehouse / f"session_{session_id}/code_workspace"
        result = json.loads((workspace / "result.json").read_text())
        assert (result["rows"], result["columns"]) == (3, 3)
        assert (workspace / "chart.png").read_bytes().startswith(b"\x89PNG")

        listed = (await client.get(f"/api/uploads/{session_id}")).json()["attachments"]
        by_name = {a["name"]: a for a in listed}
        assert set(by_name) == {"cities.csv", "result.json", "chart.png"}
        assert (by_name["result.json"]["source"], by_name["result.json"]["node_id"]) == (
            "workspace",
            "summarise",
        )
        assert by_name["result.json"]["path"] == "code_workspace/result.json"
        assert (by_name["chart.png"]["source"], by_name["chart.png"]["mime"]) == (
            "registered",
            "image/png",
        )
        assert by_name["chart.png"]["attachment_id"] == output["chart"]
        on_disk = {a["attachment_id"]: a["sha256"] for a in manifest(session_id, warehouse)}
        assert on_disk == {a["attachment_id"]: a["sha256"] for a in listed}

        logs = [line for m in ws.of_type("node_log") for line in m["data"]["lines"]]
        assert "cities.csv: 3 rows, 3 columns" in logs
        statuses = [m["data"]["status"] for m in ws.of_type("run_status")]
        assert statuses[0] == "running" and statuses[-1] == "completed"
        session = await Session.objects.aget(session_id=session_id)
        assert session.status == "completed"


async def test_human_input_with_attachments_reaches_the_next_node(workflows_dir, warehouse):
    write_workflow(
        workflows_dir,
        "ask",
        """
        nodes:
          - id: ask
            type: human
            prompt: Which file?
          - id: echo
            type: python
            code: |
              import json
              received = _context["human_input"]
              print("got", received["input"], [a["name"] for a in received["attachments"]])
              with open(received["attachments"][0]["path"]) as f:
                  print("content", f.read())
              set_output(_context["inputs"]["ask"]["input"])
    """,
    )
    async with asgi_client() as client:
        session_id = (await client.post("/api/sessions", json={})).json()["session_id"]
        async with Listener(session_id) as ws:
            run_id = (await execute(client, workflow="ask", session_id=session_id))["run_id"]
            waiting = await ws.wait_for(
                "run_status", lambda m: m["data"]["status"] == "waiting_for_input"
            )
            assert waiting["data"]["waiting_for"] == {"node_id": "ask", "prompt": "Which file?"}
            assert (await Session.objects.aget(session_id=session_id)).status == "waiting_for_input"

            note = await upload(client, session_id, "note.txt", b"hello there")
            await ws.send(
                {
                    "type": "human_input",
                    "data": {"input": "use this", "attachments": ["att_unknown000000"]},
                }
            )
            error = await ws.wait_for("error")
            assert error["data"]["code"] == "unknown_attachments"
            assert error["data"]["attachments"] == ["att_unknown000000"]
            await ws.send({"type": "human_input", "data": {"input": "   ", "attachments": []}})
            await until(lambda: len(ws.of_type("error")) == 2)

            await ws.send(
                {
                    "type": "human_input",
                    "data": {"input": "use this", "attachments": [note["attachment_id"]]},
                }
            )
            received = await ws.wait_for("input_received")
            assert received["data"] == {
                "run_id": run_id,
                "node_id": "ask",
                "input": "use this",
                "attachments": [note["attachment_id"]],
            }
            run = await finished(client, run_id)
            logs = [line for m in ws.of_type("node_log") for line in m["data"]["lines"]]
        assert run["status"] == "completed", run
        assert "got use this ['note.txt']" in logs and "content hello there" in logs
        assert [n["output"] for n in run["nodes"]] == [
            {"input": "use this", "attachments": [note["attachment_id"]]},
            "use this",
        ]
        late = await client.post(f"/api/workflow/runs/{run_id}/input", json={"input": "again"})
        assert (late.status_code, late.json()["code"]) == (409, "not_waiting_for_input")


async def test_a_node_that_runs_too_long_is_killed_with_its_children(workflows_dir, tmp_path):
    # The child is found by a marker on its command line: inside the sandbox's
    # PID namespace the node sees other process ids than the host does.
    marker = f"mac-test-child-{tmp_path.name}"
    write_workflow(
        workflows_dir,
        "slow",
        f"""
        nodes:
          - id: sleeper
            type: python
            timeout: 3
            code: |
              import subprocess, sys, time
              child = subprocess.Popen(
                  [sys.executable, "-c", "import time; time.sleep(60)", {marker!r}]
              )
              print("sleeping", flush=True)
              time.sleep(60)
          - id: never
            type: python
            code: print("unreachable")
    """,
    )
    async with asgi_client() as client:
        started = await execute(client, workflow="slow")
        await until(lambda: _processes_with(marker), timeout=10)
        run = await finished(client, started["run_id"])
    assert run["status"] == "failed"
    assert [n["status"] for n in run["nodes"]] == ["failed", "skipped"]
    assert "Timed out after 3 s" in run["nodes"][0]["error"]
    assert "Timed out" in run["error"]
    await until(lambda: not any(alive(pid) for pid in _processes_with(marker)), timeout=10)


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if marker.encode() in cmdline.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


async def test_cancel_kills_the_running_node(workflows_dir):
    write_workflow(
        workflows_dir,
        "forever",
        """
        nodes:
          - id: loop
            type: python
            code: |
              import time
              print("started", flush=True)
              time.sleep(120)
    """,
    )
    async with asgi_client() as client:
        started = await execute(client, workflow="forever")
        async with Listener(started["session_id"]) as ws:
            await ws.wait_for("node_log", lambda m: "started" in m["data"]["lines"])
            response = await client.post(f"/api/workflow/runs/{started['run_id']}/cancel")
            assert response.status_code == 202
            run = await finished(client, started["run_id"])
        assert (run["status"], run["nodes"][0]["status"]) == ("cancelled", "cancelled")
        again = await client.post(f"/api/workflow/runs/{started['run_id']}/cancel")
        assert (again.status_code, again.json()["code"]) == (409, "run_finished")
    assert (await Session.objects.aget(session_id=started["session_id"])).status == "cancelled"


async def test_a_waiting_run_can_be_cancelled(workflows_dir):
    write_workflow(workflows_dir, "wait", "nodes:\n  - id: ask\n    type: human\n")
    async with asgi_client() as client:
        started = await execute(client, workflow="wait")
        await until(lambda: _status_is(client, started["run_id"], "waiting_for_input"))
        await client.post(f"/api/workflow/runs/{started['run_id']}/cancel")
        run = await finished(client, started["run_id"])
    assert (run["status"], run["nodes"][0]["status"]) == ("cancelled", "cancelled")


async def _status_is(client, run_id: str, status: str) -> bool:
    return (await run_status(client, run_id))["status"] == status


async def test_a_crashing_node_fails_the_run_with_its_own_message(workflows_dir):
    write_workflow(
        workflows_dir,
        "crash",
        """
        nodes:
          - id: boom
            type: python
            code: |
              print("about to fail")
              def check(data):
                  raise RuntimeError("the data is wrong")
              check(None)
    """,
    )
    async with asgi_client() as client:
        started = await execute(client, workflow="crash")
        async with Listener(started["session_id"]) as ws:
            run = await finished(client, started["run_id"])
            second = await execute(client, workflow="crash", session_id=started["session_id"])
            await finished(client, second["run_id"])
            logged = await ws.wait_for("node_log", lambda m: m["data"]["stream"] == "stderr")
    node = run["nodes"][0]
    assert (run["status"], node["status"], node["exit_code"]) == ("failed", "failed", 1)
    assert node["error"] == "Exited with code 1.\nRuntimeError: the data is wrong"
    assert run["error"] == "Node 'boom' failed: " + node["error"]
    # The traceback goes to the node's log, from the script's own frames on.
    trace = "\n".join(logged["data"]["lines"])
    assert "Traceback" in trace and "in check" in trace
    assert "runpy" not in trace and "workflows/node.py" not in trace
    assert (await Session.objects.aget(session_id=started["session_id"])).status == "failed"


async def test_a_node_that_exits_with_a_message_shows_it(workflows_dir):
    write_workflow(
        workflows_dir,
        "refuse",
        """
        nodes:
          - id: refuse
            type: python
            code: raise SystemExit("No CSV attachment was given to this run.")
    """,
    )
    async with asgi_client() as client:
        run = await finished(client, (await execute(client, workflow="refuse"))["run_id"])
    assert run["nodes"][0]["error"] == (
        "Exited with code 1.\nNo CSV attachment was given to this run."
    )


async def test_nodes_get_no_server_secrets_and_run_in_the_workspace(
    workflows_dir, monkeypatch, settings
):
    monkeypatch.setenv("DATABASE_URL", "postgres://secret@db/prod")
    monkeypatch.setenv("MAC_SECRET_KEY", "do-not-leak")
    monkeypatch.setenv("REDIS_URL", "redis://secret")
    settings.WORKFLOWS_NODE_ENV = {"EXTRA": "given"}
    write_workflow(
        workflows_dir,
        "env",
        """
        nodes:
          - id: env
            type: python
            code: |
              import os
              set_output({"env": dict(os.environ), "cwd": os.getcwd(),
                          "root": _context["python_workspace_root"]})
    """,
    )
    async with asgi_client() as client:
        run = await finished(client, (await execute(client, workflow="env"))["run_id"])
    output = run["nodes"][0]["output"]
    env = output["env"]
    assert not {
        "DATABASE_URL",
        "REDIS_URL",
        "MAC_SECRET_KEY",
        "SECRET_KEY",
        "DJANGO_SETTINGS_MODULE",
    } & set(env)
    assert not any("secret" in value for value in env.values())
    assert env["EXTRA"] == "given"
    assert output["cwd"] == output["root"] == env["HOME"]
    assert output["root"].endswith("/code_workspace")


async def test_names_a_node_cannot_record_are_skipped_without_failing_the_run(
    workflows_dir, warehouse
):
    write_workflow(
        workflows_dir,
        "names",
        """
        nodes:
          - id: names
            type: python
            code: |
              import os
              open(os.path.join(b".", b"bad-\\xff.txt"), "wb").write(b"x")
              open("..\\\\..\\\\zipslip.txt", "w").write("slip")
              open("result.json", "w").write("{}")
    """,
    )
    async with asgi_client() as client:
        run = await finished(client, (await execute(client, workflow="names"))["run_id"])
    assert run["status"] == "completed", run
    recorded = [a["name"] for a in manifest(run["session_id"], warehouse)]
    assert recorded == ["result.json"]


async def test_a_node_over_its_memory_limit_fails(workflows_dir, settings):
    settings.WORKFLOWS_NODE_MEMORY_BYTES = 512 << 20
    write_workflow(
        workflows_dir,
        "hungry",
        """
        nodes:
          - id: hog
            type: python
            code: |
              block = bytearray(1 << 30)
    """,
    )
    async with asgi_client() as client:
        run = await finished(client, (await execute(client, workflow="hungry"))["run_id"])
    assert run["status"] == "failed"
    assert "MemoryError" in run["nodes"][0]["error"]


async def test_one_run_at_a_time_per_session(workflows_dir):
    write_workflow(workflows_dir, "wait", "nodes:\n  - id: ask\n    type: human\n")
    async with asgi_client() as client:
        started = await execute(client, workflow="wait")
        response = await client.post(
            "/api/workflow/execute",
            json={"task_prompt": "again", "workflow": "wait", "session_id": started["session_id"]},
        )
        assert response.status_code == 409
        assert response.json()["code"] == "run_in_progress"
        assert response.json()["run_id"] == started["run_id"]
        await client.post(f"/api/workflow/runs/{started['run_id']}/cancel")
        await finished(client, started["run_id"])


async def test_auto_clean_purges_attachments_when_the_session_completes(settings, warehouse):
    settings.ATTACHMENTS_AUTO_CLEAN = True
    async with asgi_client() as client:
        session_id = (await client.post("/api/sessions", json={})).json()["session_id"]
        csv = await upload(client, session_id, "cities.csv", CSV)
        started = await execute(
            client,
            workflow="csv_summary",
            session_id=session_id,
            attachments=[csv["attachment_id"]],
        )
        run = await finished(client, started["run_id"])
        listed = (await client.get(f"/api/uploads/{session_id}")).json()["attachments"]
    assert run["status"] == "completed"
    workspace = warehouse / f"session_{session_id}/code_workspace"
    assert not (workspace / "attachments").exists()
    assert (workspace / "result.json").exists()
    assert listed == []
    rows = [a async for a in Attachment.objects.filter(session__session_id=session_id)]
    assert {a.name for a in rows} == {"cities.csv", "result.json", "chart.png"}
    assert all(a.purged_at is not None for a in rows)


async def test_by_default_everything_is_kept(warehouse):
    async with asgi_client() as client:
        session_id = (await client.post("/api/sessions", json={})).json()["session_id"]
        csv = await upload(client, session_id, "cities.csv", CSV)
        started = await execute(
            client,
            workflow="csv_summary",
            session_id=session_id,
            attachments=[csv["attachment_id"]],
        )
        await finished(client, started["run_id"])
        listed = (await client.get(f"/api/uploads/{session_id}")).json()["attachments"]
    assert len(listed) == 3
    assert (warehouse / f"session_{session_id}/code_workspace/attachments").is_dir()


async def test_runs_interrupted_by_a_restart_are_marked_failed(workflows_dir):
    from workflows import runs

    write_workflow(workflows_dir, "wait", "nodes:\n  - id: ask\n    type: human\n")
    async with asgi_client() as client:
        started = await execute(client, workflow="wait")
        await until(lambda: _status_is(client, started["run_id"], "waiting_for_input"))
        # As if the worker had been a process of this host that died.
        gone = subprocess.Popen(["true"])
        gone.wait()
        await WorkflowRun.objects.filter(run_id=started["run_id"]).aupdate(
            worker=f"{socket.gethostname()}:{gone.pid}:old"
        )
        assert await sync_to_async(runs.fail_interrupted_runs)() == [started["run_id"]]
        run = await run_status(client, started["run_id"])
        assert run["status"] == "failed"
        assert run["error"] == runs.RESTART_REASON
        assert run["nodes"][0]["status"] == "failed"
        assert (await Session.objects.aget(session_id=started["session_id"])).status == "failed"
        # The task that was still running here notices, stops, and leaves the verdict alone.
        assert (await finished(client, started["run_id"]))["error"] == runs.RESTART_REASON


async def test_a_stale_heartbeat_from_another_host_fails_the_run_when_it_is_read(
    workflows_dir, settings
):
    from datetime import timedelta

    from django.utils import timezone

    settings.WORKFLOWS_HEARTBEAT_TIMEOUT = 60
    write_workflow(workflows_dir, "wait", "nodes:\n  - id: ask\n    type: human\n")
    async with asgi_client() as client:
        started = await execute(client, workflow="wait")
        await until(lambda: _status_is(client, started["run_id"], "waiting_for_input"))
        assert (await run_status(client, started["run_id"]))["status"] == "waiting_for_input"
        old = timezone.now() - timedelta(seconds=settings.WORKFLOWS_HEARTBEAT_TIMEOUT + 1)
        await WorkflowRun.objects.filter(run_id=started["run_id"]).aupdate(
            worker="another-host:1:x", heartbeat_at=old
        )
        assert (await run_status(client, started["run_id"]))["status"] == "failed"
        await finished(client, started["run_id"])


async def test_outputs_over_the_session_quota_fail_the_run_and_are_kept(workflows_dir, settings):
    settings.ATTACHMENTS_SESSION_MAX_FILES = 2
    write_workflow(
        workflows_dir,
        "prolific",
        """
        nodes:
          - id: write
            type: python
            code: |
              for i in range(3):
                  open(f"out{i}.txt", "w").write(f"output {i}")
          - id: never
            type: python
            code: |
              open("late.txt", "w").write("should not run")
    """,
    )
    async with asgi_client() as client:
        started = await execute(client, workflow="prolific")
        run = await finished(client, started["run_id"])
    assert run["status"] == "failed"
    assert "quota" in run["error"] and "'write'" in run["error"]
    names = sorted(
        [a.name async for a in Attachment.objects.filter(session__session_id=started["session_id"])]
    )
    assert names == ["out0.txt", "out1.txt", "out2.txt"]  # kept, as the README says
    assert [n["status"] for n in run["nodes"]] == ["completed", "skipped"]
