"""
Reconciliation (attachments.reconcile, manage.py check_warehouse): what a
crash can leave is found, reported, and with --repair put right; what is in
use or recorded is never touched.
"""

from __future__ import annotations

import io
import json
import os

import pytest
from django.core.management import call_command

from attachments import paths
from attachments.models import Attachment, Session
from attachments.receiving import UploadSink
from attachments.uploads import accept_upload

from .builders import new_session

pytestmark = pytest.mark.django_db(transaction=True)


def check(*args: str) -> str:
    out = io.StringIO()
    try:
        call_command("check_warehouse", *args, stdout=out, stderr=out)
    except SystemExit:
        pass
    return out.getvalue()


def attachments_dir(session):
    return paths.attachments_dir(session.directory)


def record(session, name: str, content: bytes) -> Attachment:
    sink = UploadSink(attachments_dir(session), name)
    sink.write(content)
    return accept_upload(session, sink.finish())


def test_a_clean_warehouse_has_nothing_to_report():
    session = new_session()
    record(session, "a.txt", b"a")
    assert "0 problem(s)" in check()


def test_an_upload_in_progress_is_left_alone_and_a_dead_ones_staging_is_removed():
    session = new_session()
    in_progress = UploadSink(attachments_dir(session), "busy.bin")
    in_progress.write(b"still arriving")
    dead = paths.staging_dir(session.directory) / "att_deadprocess00001"
    dead.mkdir(parents=True)
    (dead / "half.bin").write_bytes(b"half")
    report = check()
    assert "interrupted upload in staging" in report and dead.exists()
    check("--repair")
    assert not dead.exists()
    assert in_progress.path.exists()
    in_progress.abort()


def test_uncommitted_files_and_temporary_manifests_are_removed():
    session = new_session()
    kept = record(session, "kept.txt", b"kept")
    orphan = attachments_dir(session) / "att_nevercommitted01"
    orphan.mkdir()
    (orphan / "x.bin").write_bytes(b"x")
    temp = attachments_dir(session) / ".manifest-abc.tmp"
    temp.write_text("{}")
    check("--repair")
    assert not orphan.exists() and not temp.exists()
    assert (session.directory / kept.path).read_bytes() == b"kept"
    assert "0 problem(s)" in check()


def test_a_committed_row_missing_from_the_manifest_is_written_back():
    session = new_session()
    first = record(session, "a.txt", b"a")
    second = record(session, "b.txt", b"b")
    manifest = attachments_dir(session) / "attachments_manifest.json"
    data = json.loads(manifest.read_text())
    data["attachments"] = [
        e for e in data["attachments"] if e["attachment_id"] != second.attachment_id
    ]
    manifest.write_text(json.dumps(data))
    assert "manifest entries written back from rows: 1" in check("--repair")
    ids = {e["attachment_id"] for e in json.loads(manifest.read_text())["attachments"]}
    assert ids == {first.attachment_id, second.attachment_id}


def test_a_purge_left_half_done_is_finished():
    session = new_session()
    record(session, "a.txt", b"a")
    Session.objects.filter(pk=session.pk).update(purged_at="2026-01-01T00:00:00Z")
    assert session.directory.exists()
    assert f"purge left unfinished: {session.session_id}" in check("--repair")
    assert not session.directory.exists()


def test_the_server_reconciles_when_it_starts(tmp_path):
    from attachments.reconcile import reconcile_in_background

    session = new_session()
    dead = paths.staging_dir(session.directory) / "att_deadprocess00002"
    dead.mkdir(parents=True)
    (dead / "half.bin").write_bytes(os.urandom(10))
    reconcile_in_background().join(30)
    assert not dead.exists()
