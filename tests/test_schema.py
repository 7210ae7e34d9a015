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
from hypothesis import strategies as st

from tests.servers import run_server

EXAMPLES_PER_OPERATION = 20
EXPECTED_PATHS = {
    "/api/limits",
    "/api/sessions",
    "/api/sessions/{session_id}",
    "/api/uploads/{session_id}",
    "/api/sessions/{session_id}/artifacts/{artifact_id}",
    "/api/sessions/{session_id}/artifacts/{artifact_id}/content",
    "/api/workflows/{name}/desc",
    "/api/sessions/{session_id}/download",
    "/api/workflows",
    "/api/workflow/execute",
    "/api/workflow/runs",
    "/api/workflow/runs/{run_id}",
    "/api/workflow/runs/{run_id}/cancel",
    "/api/workflow/runs/{run_id}/input",
    "/api/sessions/{session_id}/artifact-events",
    "/api/sessions/{session_id}/artifact-events/stream",
}
# An event stream never ends, so a fuzzer cannot read its response; its
# errors are those of the long-poll, which is fuzzed.
NOT_FUZZED = {"GET /api/sessions/{session_id}/artifact-events/stream"}


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


# tus PATCH bodies are raw bytes, like application/octet-stream.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")


@pytest.fixture(scope="module")
def live_api(django_db_setup, django_db_blocker, tmp_path_factory):
    """One real server for the module's tests, which are transactional: their rows are flushed."""
    root = tmp_path_factory.mktemp("fuzz")
    with (
        django_db_blocker.unblock(),
        run_server("uvicorn", root / "WareHouse", root / "logs") as server,
    ):
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
    bundle = httpx.get(
        live_api.url + "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"
    )
    assert bundle.status_code == 200


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_fuzzing_finds_no_server_error_and_nothing_off_schema(live_api):
    """
    Every operation, with inputs generated from the schema (valid and not):
    no 5xx, and every response matches what the schema says.
    """
    schema = schemathesis.openapi.from_url(live_api.url + "/api/schema/")
    # A real session, so that generated requests also reach past the access check.
    created = httpx.post(live_api.url + "/api/sessions", json={}).json()
    session_id, token = created["session_id"], created["token"]
    httpx.post(
        f"{live_api.url}/api/uploads/{session_id}",
        files={"file": ("data.csv", b"a,b\n1,2\n")},
        headers={"Authorization": f"Bearer {token}"},
    )

    # Through schemathesis' auth hook, so its own checks can also try without.
    @schema.auth()
    class SessionToken:
        def get(self, case, context):
            return token

        def set(self, case, data, context):
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in NOT_FUZZED:
            continue

        @given(case=operation.as_strategy(), in_real_session=st.booleans())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case, in_real_session):
            if in_real_session and "session_id" in (case.path_parameters or {}):
                case.path_parameters["session_id"] = session_id
            if isinstance(case.query, dict) and "wait_seconds" in case.query:
                # Waiting is tested elsewhere; here it would only slow the run.
                case.query["wait_seconds"] = 0
            # Two checks assume what this API deliberately does not do: a
            # well-formed id that names nothing is a 400 (unknown attachments)
            # or a 404, so "valid data is accepted" cannot hold; and missing or
            # wrong credentials get the 404 of an unknown session, never a
            # 401/403 that would confirm the session exists (tests/attachments/
            # test_access*.py check that refusal). Every other check applies.
            case.call_and_validate(
                base_url=live_api.url,
                timeout=30,
                excluded_checks=[
                    schemathesis.checks.positive_data_acceptance,
                    schemathesis.checks.ignored_auth,
                ],
            )

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect them all
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures) + "\n\nServer log:\n" + live_api.log()[-6000:]


@pytest.mark.django_db
def test_the_event_schema_describes_exactly_what_every_transport_sends():
    from artifacts.models import ArtifactEvent
    from tests.artifacts.builders import add_attachment, new_session

    add_attachment(new_session(), "chart.png", mime="image/png")
    payload = ArtifactEvent.objects.get().to_payload()
    event = generated_schema()["components"]["schemas"]["ArtifactEvent"]
    assert set(event["properties"]) == set(payload) == set(event["required"])


def test_bytes_are_binary_of_any_type_and_metadata_is_typed():
    paths = generated_schema()["paths"]
    artifact = paths["/api/sessions/{session_id}/artifacts/{artifact_id}"]["get"]["responses"]
    binary = {"type": "string", "format": "binary"}
    # JSON first: generated clients read the metadata from this operation.
    assert list(artifact["200"]["content"]) == ["application/json", "*/*"]
    assert artifact["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ArtifactMeta"
    }
    assert artifact["200"]["content"]["*/*"]["schema"] == binary
    content = paths["/api/sessions/{session_id}/artifacts/{artifact_id}/content"]["get"]
    assert content["responses"]["200"]["content"] == {"*/*": {"schema": binary}}
    zipped = paths["/api/sessions/{session_id}/download"]["get"]["responses"]
    assert zipped["200"]["content"] == {"application/zip": {"schema": binary}}
    for responses in (artifact, content["responses"], zipped):
        assert "content" not in responses["304"]


# Shapes the schema cannot express, generated all the same: bodies nested far
# past any bound, Range positions with thousands of digits, and numbers
# beyond any float, on the operations that read them.
JSON_BODY_OPERATIONS = ["/api/sessions", "/api/workflow/execute"]


def _nested(depth: int, leaf: str) -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_hostile_shapes_get_4xx_json_never_5xx(live_api):
    created = httpx.post(live_api.url + "/api/sessions", json={}).json()
    auth = {"Authorization": f"Bearer {created['token']}"}
    uploaded = httpx.post(
        f"{live_api.url}/api/uploads/{created['session_id']}",
        files={"file": ("data.csv", b"a,b\n1,2\n")},
        headers=auth,
    ).json()
    session_url = f"{live_api.url}/api/sessions/{created['session_id']}"
    stream = f"{session_url}/artifacts/{uploaded['attachment_id']}"

    @given(
        path=st.sampled_from(JSON_BODY_OPERATIONS),
        depth=st.integers(min_value=1, max_value=20_000),
        leaf=st.sampled_from(["", "1", "1e999", "-1e999", "NaN", "Infinity", '"x"']),
        field=st.sampled_from(["session_id", "variables", "attachments", "task_prompt"]),
    )
    @settings(
        max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def bodies(path, depth, leaf, field):
        value = _nested(depth, leaf)
        body = f'{{"task_prompt": "x", "workflow": "csv_summary", "{field}": {value}}}'
        response = httpx.post(
            live_api.url + path,
            content=body,
            headers={"Content-Type": "application/json", **auth},
            timeout=30,
        )
        assert response.status_code < 500, (path, depth, leaf, response.text[:200])
        if response.status_code >= 400:
            assert set(response.json()) >= {"detail", "code"}

    @given(
        first=st.one_of(st.just(""), st.integers(0, 10_000).map(lambda n: "9" * n)),
        last=st.one_of(st.just(""), st.integers(0, 10_000).map(lambda n: "9" * n)),
    )
    @settings(
        max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def ranges(first, last):
        response = httpx.get(
            stream, params={"mode": "stream"}, headers={**auth, "Range": f"bytes={first}-{last}"}
        )
        assert response.status_code in (200, 206, 416), response.text[:200]

    bodies()
    ranges()
