"""The access policy on the workflow API: runs belong to their session's callers."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from attachments.models import Session
from attachments.sessions import create_session
from tests.attachments.builders import JWT_SECRET, bearer, make_jwt
from workflows import runs
from workflows.loader import load_workflow
from workflows.models import WorkflowRun

pytestmark = [pytest.mark.django_db, pytest.mark.access_policy("token")]

SESSION_NOT_FOUND = {"detail": "No such session.", "code": "session_not_found"}


@pytest.fixture(autouse=True)
def no_launch(monkeypatch):
    """Runs are recorded but not executed: these tests are about who may reach them."""
    launched = []
    monkeypatch.setattr("workflows.views.launch", launched.append)
    return launched


@pytest.fixture
def session():
    return create_session()


@pytest.fixture
def run(session):
    return runs.create_run(
        session, load_workflow("review_csv"), task_prompt="x", variables={}, attachments=[]
    )


def execute(headers: dict | None = None, **body):
    body = {"task_prompt": "Summarise", "workflow": "csv_summary", **body}
    return APIClient().post("/api/workflow/execute", body, format="json", **(headers or {}))


class TestExecute:
    def test_without_a_session_the_new_one_and_its_token_are_returned(self, no_launch):
        response = execute()
        assert response.status_code == 202
        body = response.json()
        assert no_launch == [body["run_id"]]
        shown = APIClient().get(f"/api/sessions/{body['session_id']}", **bearer(body["token"]))
        assert shown.status_code == 200

    def test_a_session_needs_its_credential(self, session, no_launch):
        refused = execute(session_id=session.session_id)
        unknown = execute(session_id="unknown")
        wrong = execute(bearer(create_session().token), session_id=session.session_id)
        for response in (refused, unknown, wrong):
            assert (response.status_code, response.json()) == (404, SESSION_NOT_FOUND)
        assert not WorkflowRun.objects.exists() and no_launch == []
        assert Session.objects.count() == 2

    def test_with_the_token(self, session):
        response = execute(bearer(session.token), session_id=session.session_id)
        assert response.status_code == 202 and "token" not in response.json()

    def test_with_a_jwt(self, session, settings):
        settings.ATTACHMENTS_JWT_SECRET = JWT_SECRET
        response = execute(bearer(make_jwt(sid=session.session_id)), session_id=session.session_id)
        assert response.status_code == 202


RUN_CALLS = [("get", ""), ("post", "/cancel"), ("post", "/input")]


def call_run(run_id: str, method: str, suffix: str, headers: dict | None = None):
    return getattr(APIClient(), method)(
        f"/api/workflow/runs/{run_id}{suffix}", {"input": "hi"}, format="json", **(headers or {})
    )


class TestRuns:
    @pytest.mark.parametrize(("method", "suffix"), RUN_CALLS)
    def test_a_foreign_run_is_the_404_of_an_unknown_one(self, run, method, suffix):
        unknown = call_run("run_doesnotexist00", method, suffix).json()
        assert unknown["code"] == "run_not_found"
        for headers in ({}, bearer("wrong"), bearer(create_session().token)):
            response = call_run(run.run_id, method, suffix, headers)
            assert (response.status_code, response.json()) == (404, unknown)
        run.refresh_from_db()
        assert not run.cancel_requested

    @pytest.mark.parametrize(
        ("method", "suffix", "status"),
        [("get", "", 200), ("post", "/cancel", 202), ("post", "/input", 409)],
    )
    def test_the_sessions_token_reaches_its_runs(self, session, run, method, suffix, status):
        # 409 for input: the run is pending, no node waits yet; the caller got past the check.
        response = call_run(run.run_id, method, suffix, bearer(session.token))
        assert response.status_code == status, response.content

    def test_listing_a_sessions_runs_needs_its_credential(self, session, run):
        url = f"/api/workflow/runs?session_id={session.session_id}"
        assert APIClient().get(url).json() == SESSION_NOT_FOUND
        listed = APIClient().get(url, **bearer(session.token)).json()["runs"]
        assert [r["run_id"] for r in listed] == [run.run_id]

    @pytest.mark.access_policy("open")
    def test_the_open_policy_needs_the_run_id_alone(self, run):
        assert call_run(run.run_id, "get", "").status_code == 200
