"""The workflow API's answers to bad input: always JSON, never a 500, never a stray session."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from attachments.models import Session
from attachments.sessions import create_session
from tests.attachments.builders import DjangoPath, multipart
from workflows.models import WorkflowRun

pytestmark = pytest.mark.django_db


def post(body: dict):
    return APIClient().post("/api/workflow/execute", body, format="json")


def upload(session_id: str, name: str = "a.csv") -> str:
    body, content_type = multipart([("file", name, b"a,b\n1,2\n")])
    return DjangoPath().post(f"/api/uploads/{session_id}", body, content_type).body["attachment_id"]


def test_lists_the_shipped_workflows():
    response = APIClient().get("/api/workflows")
    assert response.status_code == 200
    body = response.json()
    # As the reference platform's Web UI reads it: file names.
    assert body["workflows"] == ["csv_summary.yaml", "review_csv.yaml"]
    listed = {w["name"]: w for w in body["details"]}
    assert listed["csv_summary"]["file"] == "csv_summary.yaml"
    assert listed["csv_summary"]["nodes"] == [
        {
            "id": "summarise",
            "type": "python",
            "description": listed["csv_summary"]["nodes"][0]["description"],
        }
    ]
    assert "CSV" in listed["csv_summary"]["description"]
    assert [n["type"] for n in listed["review_csv"]["nodes"]] == ["human", "python"]
    assert body["invalid"] == []


@pytest.mark.parametrize("name", ["csv_summary", "csv_summary.yaml"])
def test_a_workflows_description_by_name_or_file_name(name):
    response = APIClient().get(f"/api/workflows/{name}/desc")
    assert response.status_code == 200
    from workflows.loader import load_workflow

    assert response.json() == {"description": load_workflow("csv_summary").description}
    assert "CSV" in response.json()["description"]


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("nope.yaml", 404, "workflow_not_found"),
        ("..", 404, "workflow_not_found"),
        ("broken.yaml", 400, "invalid_workflow"),
    ],
)
def test_a_description_that_cannot_be_given(name, status, code, tmp_path, settings):
    (tmp_path / "broken.yaml").write_text("nodes:\n  - id: a\n    type: pyhton\n")
    settings.WORKFLOWS_DIR = tmp_path
    response = APIClient().get(f"/api/workflows/{name}/desc")
    assert (response.status_code, response.json()["code"]) == (status, code)


def test_a_malformed_file_is_listed_apart_with_its_file(tmp_path, settings):
    (tmp_path / "broken.yml").write_text("nodes: []\n")
    (tmp_path / "fine.yaml").write_text("description: d\nnodes:\n  - {id: a, type: human}\n")
    settings.WORKFLOWS_DIR = tmp_path
    body = APIClient().get("/api/workflows").json()
    assert body["workflows"] == ["fine.yaml"]
    assert [(w["name"], w["file"]) for w in body["invalid"]] == [("broken", "broken.yml")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"workflow": "csv_summary"}, "task_prompt"),
        ({"workflow": "csv_summary", "task_prompt": "   "}, "task_prompt"),
        ({"workflow": "csv_summary", "task_prompt": ""}, "task_prompt"),
        ({"task_prompt": "x"}, "workflow"),
        ({"task_prompt": "x", "workflow": "a", "yaml_file": "b"}, "yaml_file"),
        ({"task_prompt": "x", "workflow": "csv_summary", "attachments": "att_x"}, "attachments"),
        ({"task_prompt": "x", "workflow": "csv_summary", "variables": [1]}, "variables"),
    ],
)
def test_invalid_bodies_name_the_field(body, field):
    response = post(body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert field in response.json()["errors"]
    assert Session.objects.count() == 0


def test_task_prompt_is_required_even_with_attachments():
    session = create_session()
    attachment_id = upload(session.session_id)
    response = post(
        {
            "workflow": "csv_summary",
            "session_id": session.session_id,
            "attachments": [attachment_id],
        }
    )
    assert response.status_code == 400 and "task_prompt" in response.json()["errors"]


def test_an_unknown_workflow_is_404():
    response = post({"task_prompt": "x", "workflow": "nope"})
    assert (response.status_code, response.json()["code"]) == (404, "workflow_not_found")
    assert Session.objects.count() == 0


def test_a_malformed_workflow_is_400_with_its_line(tmp_path, settings):
    settings.WORKFLOWS_DIR = tmp_path
    (tmp_path / "broken.yaml").write_text("description: x\nnodes:\n  - id: a\n    type: pyhton\n")
    response = post({"task_prompt": "x", "yaml_file": "broken.yaml"})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_workflow"
    assert body["line"] == 4
    assert "line 4" in body["detail"] and "pyhton" in body["detail"]
    assert Session.objects.count() == 0


def test_unknown_and_foreign_attachments_are_named():
    mine, other = create_session(), create_session()
    own = upload(mine.session_id)
    foreign = upload(other.session_id)
    response = post(
        {
            "task_prompt": "x",
            "workflow": "csv_summary",
            "session_id": mine.session_id,
            "attachments": [own, foreign, "att_doesnotexist00"],
        }
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "unknown_attachments"
    assert body["attachments"] == [foreign, "att_doesnotexist00"]
    assert foreign in body["detail"]
    assert not WorkflowRun.objects.exists()


def test_attachments_without_a_session_are_unknown():
    response = post(
        {"task_prompt": "x", "workflow": "csv_summary", "attachments": ["att_abcdefghijkl"]}
    )
    assert (response.status_code, response.json()["code"]) == (400, "unknown_attachments")
    assert Session.objects.count() == 0


@pytest.mark.parametrize(
    ("session_id", "status", "code"),
    [("bad.id", 400, "invalid_session_id"), ("unknown", 404, "session_not_found")],
)
def test_bad_sessions(session_id, status, code):
    response = post({"task_prompt": "x", "workflow": "csv_summary", "session_id": session_id})
    assert (response.status_code, response.json()["code"]) == (status, code)


def test_a_json_body_is_required():
    response = APIClient().post(
        "/api/workflow/execute", "not json", content_type="application/json"
    )
    assert response.status_code == 400
    response = APIClient().post("/api/workflow/execute", "x", content_type="text/plain")
    assert response.status_code == 415


@pytest.mark.parametrize("run_id", ["nope", "run_doesnotexist00", "run_" + "x" * 80])
def test_unknown_runs_are_404(run_id):
    for method, suffix in (("get", ""), ("post", "/cancel"), ("post", "/input")):
        response = getattr(APIClient(), method)(
            f"/api/workflow/runs/{run_id}{suffix}", {}, format="json"
        )
        assert (response.status_code, response.json()["code"]) == (404, "run_not_found")


def test_runs_of_a_session_are_listed():
    session = create_session()
    response = APIClient().get(f"/api/workflow/runs?session_id={session.session_id}")
    assert response.json() == {"runs": []}
    assert APIClient().get("/api/workflow/runs").status_code == 400
