"""The OpenAPI schema describes the whole API, and a fuzzer finds no 5xx and nothing off-schema."""

from __future__ import annotations

import io

import httpx
import pytest
import schemathesis
import schemathesis.checks
import yaml
from django.core.management import call_command
from hypothesis import HealthCheck, given, settings

from tests.servers import run_server

EXAMPLES_PER_OPERATION = 20
EXPECTED_PATHS = {
    "/api/limits",
    "/api/sessions",
    "/api/sessions/{session_id}",
    "/api/uploads/{session_id}",
    "/api/sessions/{session_id}/artifacts/{artifact_id}",
    "/api/sessions/{session_id}/download",
    "/api/workflows",
    "/api/workflow/execute",
    "/api/workflow/runs",
    "/api/workflow/runs/{run_id}",
    "/api/workflow/runs/{run_id}/cancel",
    "/api/workflow/runs/{run_id}/input",
}


def generated_schema() -> dict:
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    return yaml.safe_load(out.getvalue())


def test_the_schema_is_valid_and_covers_every_endpoint():
    paths = set(generated_schema()["paths"])
    assert EXPECTED_PATHS <= paths


def test_every_operation_documents_its_json_errors():
    schema = generated_schema()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if path == "/api/workflows" or path == "/api/limits" and method == "get":
                continue
            assert any(code.startswith("4") for code in operation["responses"]), (method, path)


@pytest.fixture(scope="module")
def live_api(django_db_setup, django_db_blocker, tmp_path_factory):
    """One real server for the module's tests, which are transactional: their rows are flushed."""
    root = tmp_path_factory.mktemp("fuzz")
    with django_db_blocker.unblock(), run_server("uvicorn", root / "WareHouse", root / "logs") as server:
        yield server


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_schema_and_reference_page_are_served(live_api):
    schema = httpx.get(live_api.url + "/api/schema/")
    assert schema.status_code == 200
    assert "openapi" in schema.text
    docs = httpx.get(live_api.url + "/api/docs/")
    assert docs.status_code == 200
    # Everything the page loads comes from this server: no CDN, no web fonts.
    assert "http://" not in docs.text and "https://" not in docs.text
    assert "swagger-ui-bundle.js" in docs.text
    bundle = httpx.get(live_api.url + "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert bundle.status_code == 200


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_fuzzing_finds_no_server_error_and_nothing_off_schema(live_api):
    """
    Every operation, with inputs generated from the schema (valid and not):
    no 5xx, and every response matches what the schema says.
    """
    schema = schemathesis.openapi.from_url(live_api.url + "/api/schema/")
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case):
            # A well-formed id that names nothing is a 400 (unknown attachments)
            # or a 404 by design, so "valid data is accepted" cannot hold;
            # every other check does.
            case.call_and_validate(
                base_url=live_api.url,
                timeout=30,
                excluded_checks=[schemathesis.checks.positive_data_acceptance],
            )

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect them all
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures) + "\n\nServer log:\n" + live_api.log()[-6000:]
