from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings as django_settings

# Reconciliation at start runs on a thread of its own, against whatever
# database the process has: not in the test process, nor in the servers tests
# start (they inherit this), except where a test asks for it.
os.environ.setdefault("MAC_RECONCILE_AT_START", "0")
# pytest-django may have loaded the settings before the line above ran; test
# modules import macproject.asgi while they are collected.
django_settings.ATTACHMENTS_RECONCILE_AT_START = False
# The test process itself runs without PostgreSQL's pool: tests hand one
# connection between the threads of in-process requests and close it between
# tests, which a pool does not expect. The servers the tests start use the
# pool, as deployments do.
django_settings.DATABASES["default"].get("OPTIONS", {}).pop("pool", None)

# .ci/run sets this for its PostgreSQL + Redis pass: there, a test marked
# `services` that does not run is a failure, not a skip.
REQUIRE_SERVICES = os.environ.get("MAC_REQUIRE_SERVICES") == "1"
_skipped_services_tests: list[str] = []


def services_configured() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith("postgres") and bool(
        os.environ.get("REDIS_URL")
    )


def pytest_configure(config: pytest.Config) -> None:
    if REQUIRE_SERVICES and not services_configured():
        raise pytest.UsageError(
            "MAC_REQUIRE_SERVICES=1 needs DATABASE_URL=postgres://... and REDIS_URL=redis://..."
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if services_configured():
        return
    skip = pytest.mark.skip(
        reason="needs PostgreSQL and Redis: set DATABASE_URL=postgres://... and REDIS_URL=redis://..."
    )
    for item in items:
        if item.get_closest_marker("services"):
            item.add_marker(skip)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "services" in report.keywords:
        _skipped_services_tests.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if REQUIRE_SERVICES and _skipped_services_tests:
        print("\nThese tests need PostgreSQL and Redis but were skipped:")
        for nodeid in _skipped_services_tests:
            print(f"  {nodeid}")
        session.exitstatus = 1


@pytest.fixture(autouse=True)
def warehouse(tmp_path: Path, settings) -> Path:
    """Every test gets its own empty warehouse."""
    path = tmp_path / "WareHouse"
    settings.ATTACHMENTS_WAREHOUSE_DIR = path
    return path


@pytest.fixture(autouse=True)
def access_policy(request: pytest.FixtureRequest, settings) -> str:
    """
    The access policy of this test: "open" (the session id alone) for the
    tests that are not about access, so they need no credentials; a test or
    module marked `@pytest.mark.access_policy("token")` runs under the
    product's default. Real servers started by `server` follow it too.
    """
    marker = request.node.get_closest_marker("access_policy")
    policy = marker.args[0] if marker else "open"
    settings.ATTACHMENTS_ACCESS_POLICY = policy
    return policy


@pytest.fixture(autouse=True)
def secret_key(settings) -> str:
    """A real key, as every deployment has: the placeholder fails the checks (attachments.E030)."""
    settings.SECRET_KEY = "tests-only-secret-key-" + "0123456789abcdef" * 3
    return settings.SECRET_KEY


@pytest.fixture
def server(transactional_db, warehouse: Path, tmp_path: Path, access_policy: str):
    """
    A factory for real server processes: `with server("uvicorn") as s: ...`.
    Each shares the test database, this test's warehouse and access policy.
    """
    from tests.servers import run_server

    def start(kind: str = "uvicorn", port: int | None = None, **env: str):
        env = {"MAC_ACCESS_POLICY": access_policy, **env}
        return run_server(kind, warehouse, tmp_path / "server-logs", port, **env)

    return start


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """
    A new channel layer for every test. A process keeps one layer, made for
    its one event loop; tests run many loops, and channels-redis's per-channel
    receive locks would otherwise outlive the loop of a test that was
    cancelled while receiving, and refuse the next test's receive.
    """
    yield
    from channels.layers import channel_layers

    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def synced_uploads():
    """
    Every tus PATCH a test sent in this process synced and marked before
    the next test: their threads write to the database this test used.
    """
    yield
    import sys

    resumable = sys.modules.get("attachments.resumable")
    if resumable is not None:
        assert resumable.wait_for_syncs(timeout=30), "a tus PATCH's sync did not end"
