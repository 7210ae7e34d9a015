"""
Hostile python nodes against the sandbox: each tries one escape and reports
what it got through set_output. Under bubblewrap every attempt must fail.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
from asgiref.sync import sync_to_async
from django.core import checks
from django.db import connection, connections

from workflows import sandbox

from .helpers import asgi_client, execute, finished, write_workflow

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        sandbox._bwrap_works("/usr/bin/bwrap") != "",
        reason="bubblewrap does not work on this host",
    ),
]

# Each probe prints nothing sensitive: it reports only whether it got through.
PROBE = """
import json, os, socket, sys

targets = json.loads(_context["task_prompt"])

def attempt(action):
    try:
        result = action()
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}
    leaked = targets["canary"] in str(result)
    return {"ok": True, "got": "(the server's secret)" if leaked else str(result)[:100]}
report = {}
report["parent_environ"] = attempt(
    lambda: open(f"/proc/{os.getppid()}/environ", "rb").read()
)
report["server_environ"] = attempt(
    lambda: open(f"/proc/{targets['server_pid']}/environ", "rb").read()
)
report["server_mem"] = attempt(lambda: open(f"/proc/{targets['server_pid']}/mem", "rb").read(1))
report["other_session"] = attempt(lambda: open(targets["other_file"], "rb").read())
report["other_listing"] = attempt(lambda: os.listdir(targets["warehouse"]))
report["database"] = attempt(lambda: open(targets["database"], "rb").read(16))
report["project"] = attempt(lambda: os.listdir(targets["project"]))

def connect():
    with socket.create_connection(("127.0.0.1", targets["port"]), timeout=5) as s:
        return s.getpeername()

report["network"] = attempt(connect)
report["own_workspace"] = attempt(
    lambda: open("mine.txt", "w").write("written") and open("mine.txt").read()
)
set_output(report)
"""


@pytest.fixture(autouse=True)
async def close_connections():
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture(autouse=True)
def server_secret(monkeypatch):
    monkeypatch.setenv("MAC_SECRET_KEY", "canary-secret-" + os.urandom(8).hex())


@pytest.fixture
def workflows_dir(tmp_path, settings):
    settings.WORKFLOWS_DIR = tmp_path / "workflows"
    settings.WORKFLOWS_SANDBOX = "bwrap"
    (tmp_path / "workflows").mkdir()
    return tmp_path / "workflows"


@pytest.fixture
def listener():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def _workflow(network: bool) -> str:
    code = "\n".join("              " + line for line in PROBE.strip().splitlines())
    flag = "\n            network: true" if network else ""
    return f"""
        nodes:
          - id: probe
            type: python{flag}
            code: |
{code}
    """


async def _probe(client, workflows_dir, warehouse, port: int, network: bool = False) -> dict:
    canary = os.environ["MAC_SECRET_KEY"]
    write_workflow(workflows_dir, "probe", _workflow(network))
    other = await client.post("/api/sessions")
    other_dir = warehouse / f"session_{other.json()['session_id']}" / "code_workspace"
    (other_dir / "private.txt").write_text("another session's secret")

    targets = {
        "server_pid": os.getpid(),
        "other_file": str(other_dir / "private.txt"),
        "warehouse": str(warehouse),
        "database": str(connection.settings_dict["NAME"]),
        "project": os.path.dirname(os.path.dirname(os.path.abspath(sandbox.__file__))),
        "port": port,
        "canary": canary,
    }
    started = await execute(client, workflow="probe", task_prompt=json.dumps(targets))
    run = await finished(client, started["run_id"])
    assert run["status"] == "completed", run
    return {**run["nodes"][0]["output"], "other_id": other.json()["session_id"]}


async def test_a_node_cannot_reach_secrets_sessions_database_or_network(
    workflows_dir, warehouse, listener
):
    async with asgi_client() as client:
        report = await _probe(client, workflows_dir, warehouse, listener)
    for escape in (
        "server_environ",
        "server_mem",
        "other_session",
        "network",
    ):
        assert report[escape]["ok"] is False, (escape, report[escape])
    if connection.vendor == "sqlite":
        assert report["database"]["ok"] is False, report["database"]
    # Of the project directory, at most the interpreter's virtualenv shows.
    assert "manage.py" not in report["project"].get("got", "")
    # The warehouse shows the node its own session, nothing else.
    assert report["other_id"] not in report["other_listing"].get("got", "")
    # ... while its own workspace works as before.
    assert report["own_workspace"] == {"ok": True, "got": "written"}
    # Its parent (bubblewrap, inside the sandbox) has only the node's own environment.
    assert report["parent_environ"].get("got") != "(the server's secret)"


async def test_a_node_that_declares_network_gets_it(workflows_dir, warehouse, listener):
    async with asgi_client() as client:
        report = await _probe(client, workflows_dir, warehouse, listener, network=True)
    assert report["network"]["ok"] is True, report["network"]
    assert report["other_session"]["ok"] is False


async def test_without_the_sandbox_the_same_probes_get_through(
    workflows_dir, warehouse, listener, settings
):
    # The control: the probes are real escapes, which only the sandbox stops.
    settings.WORKFLOWS_SANDBOX = "none"
    async with asgi_client() as client:
        report = await _probe(client, workflows_dir, warehouse, listener)
    # (/proc shows the environment the server started with: readable, whatever it holds.)
    assert report["server_environ"]["ok"] is True
    assert report["other_session"]["ok"] is True
    assert report["network"]["ok"] is True


def test_the_check_says_which_isolation_is_active(settings):
    settings.WORKFLOWS_SANDBOX = "auto"
    messages = checks.run_checks(tags=[checks.Tags.security])
    assert "workflows.I010" in {m.id for m in messages}
    assert any("bubblewrap" in m.msg for m in messages if m.id == "workflows.I010")


def test_the_check_warns_when_nodes_run_unconfined(settings):
    settings.WORKFLOWS_SANDBOX = "none"
    ids = {m.id for m in checks.run_checks(tags=[checks.Tags.security])}
    assert "workflows.W010" in ids
    settings.WORKFLOWS_SANDBOX = "user"
    settings.WORKFLOWS_SANDBOX_USER = "no-such-user-here"
    messages = checks.run_checks(tags=[checks.Tags.security])
    warnings = [m for m in messages if m.id == "workflows.W010"]
    assert warnings and "no user" in warnings[0].hint


def test_an_unknown_mode_is_an_error(settings):
    settings.WORKFLOWS_SANDBOX = "chroot"
    ids = {m.id for m in checks.run_checks(tags=[checks.Tags.security])}
    assert "workflows.E005" in ids
