"""
The short soak (bench/soak.py --short) through the production shape:
deploy/run-local.sh's nginx in front of two Uvicorn workers, on a database
of its own on the PostgreSQL server of DATABASE_URL and a redis-server of
its own. Under mixed load, a worker is killed with -9 mid-upload, Redis is
restarted, and a worker is restarted with SIGTERM as a rolling restart does.
Each test below is one thing a user checks afterwards; the soak runs once
for all of them, and the deployment's logs are kept in test-output/soak-logs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.server, pytest.mark.services]

ROOT = Path(__file__).resolve().parents[2]
# Generous: the soak bounds each of its own waits; this only stops a hung run.
RUN_TIMEOUT = 900


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx") and os.geteuid():
        pytest.skip("needs nginx (Debian: apt-get install nginx), or root to install it")
    parts = urlsplit(os.environ["DATABASE_URL"])
    server = f"{parts.scheme}://{parts.netloc}"
    report_path = tmp_path_factory.mktemp("soak") / "report.json"
    command = [
        sys.executable,
        "bench/soak.py",
        "--short",
        "--pg",
        server,
        "--database",
        f"soak_test_{os.getpid()}",
        "--json",
        str(report_path),
        "--logs",
        str(ROOT / "test-output" / "soak-logs"),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    # 0: reconciled; 1: it found faults (the tests below say which); else the harness broke.
    assert result.returncode in (0, 1), result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    report["output"] = result.stdout
    return report


def findings(report: dict, *columns: str) -> dict[str, int]:
    """Per phase, how many of `columns` the reconciliation counted (only the nonzero)."""
    counted = {}
    for phase in report["phases"]:
        total = sum(phase.get(column, 0) for column in columns)
        if total:
            counted[phase["fault"]] = total
    return counted


def explain(report: dict, *columns: str) -> str:
    details = [d for c in columns for d in report["issues"].get(c, [])]
    return "\n".join(details) + "\n\n" + report["output"]


def test_the_soak_ran_every_fault_and_recovered_from_each(soak):
    assert [p["fault"] for p in soak["phases"]] == [
        "baseline",
        "kill-upload",
        "redis-restart",
        "sigterm",
    ]
    not_recovered = [p["fault"] for p in soak["phases"] if p["recovery_seconds"] is None]
    assert not_recovered == [], soak["output"]


def test_every_upload_answered_201_is_listed_in_the_manifest_and_on_disk(soak):
    assert soak["uploads_201"] > 0
    assert findings(soak, "lost") == {}, explain(soak, "lost")


def test_nothing_is_recorded_twice_or_recorded_after_an_error(soak):
    assert findings(soak, "duplicated", "phantom") == {}, explain(soak, "duplicated", "phantom")


def test_no_row_manifest_entry_or_file_is_left_without_the_others(soak):
    assert findings(soak, "leftover") == {}, explain(soak, "leftover")


def test_downloads_and_zips_give_back_what_was_uploaded(soak):
    assert findings(soak, "corrupt") == {}, explain(soak, "corrupt")


def test_every_follower_saw_every_event_exactly_once_in_order(soak):
    columns = ("missed events", "events twice", "out of order")
    assert findings(soak, *columns) == {}, explain(soak, *columns)


def test_every_server_error_is_json_and_explained_by_the_fault(soak):
    columns = ("non-JSON 5xx", "unexplained 5xx")
    assert findings(soak, *columns) == {}, explain(soak, *columns)


def test_a_worker_sent_sigterm_ends_its_streams_with_a_retry_hint_and_exits(soak):
    assert findings(soak, "undrained") == {}, explain(soak, "undrained")
