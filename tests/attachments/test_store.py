"""AttachmentStore: registering files from any process, under the manifest's lock."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from attachments.manifest_sync import purge_attachments, sync_session_from_manifest
from attachments.models import Attachment
from attachments.store import AttachmentStore, RegistrationError

from .builders import DjangoPath, PNG_1x1, multipart, new_session

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path) -> AttachmentStore:
    store = AttachmentStore(tmp_path / "session_s1", "s1")
    store.workspace.mkdir(parents=True)
    return store


def write(store: AttachmentStore, rel: str, data: bytes) -> Path:
    path = store.workspace / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_register_file_copies_into_attachments_and_records_it(store):
    write(store, "out/chart.png", PNG_1x1)
    entry = store.register_file("out/chart.png", node_id="plot")
    assert entry.path == f"code_workspace/attachments/{entry.attachment_id}/chart.png"
    assert (store.session_dir / entry.path).read_bytes() == PNG_1x1
    assert (entry.mime, entry.kind, entry.size) == ("image/png", "image", len(PNG_1x1))
    assert entry.sha256 == hashlib.sha256(PNG_1x1).hexdigest()
    assert (entry.source, entry.node_id) == ("registered", "plot")
    assert entry.metadata == {"origin": "code_workspace/out/chart.png"}
    assert [e.attachment_id for e in store.entries()] == [entry.attachment_id]
    # A snapshot: the original can change without touching the attachment.
    write(store, "out/chart.png", b"changed")
    assert (store.session_dir / entry.path).read_bytes() == PNG_1x1


def test_register_file_can_move_the_file(store):
    original = write(store, "report.md", b"# Report")
    entry = store.register_file(original, move=True, name="Final report.md")
    assert not original.exists()
    assert entry.name == "Final report.md"
    assert entry.mime == "text/markdown"
    assert (store.session_dir / entry.path).read_bytes() == b"# Report"


def test_in_place_registration_keeps_one_entry_per_path(store):
    write(store, "result.json", b'{"a": 1}')
    first = store.register_file("result.json", in_place=True, source="workspace", node_id="n1")
    assert first.path == "code_workspace/result.json"
    write(store, "result.json", b'{"a": 2}')
    second = store.register_file("result.json", in_place=True, source="workspace", node_id="n2")
    assert second.attachment_id == first.attachment_id
    assert second.created_at == first.created_at
    assert second.sha256 == hashlib.sha256(b'{"a": 2}').hexdigest()
    assert len(store.entries()) == 1


def test_register_bytes(store):
    entry = store.register_bytes(b"a,b\n1,2\n", "table.csv", node_id="n")
    assert entry.mime == "text/csv"
    assert (store.session_dir / entry.path).read_bytes() == b"a,b\n1,2\n"


@pytest.mark.parametrize("target", ["/etc/hostname", "../../outside.txt"])
def test_files_outside_the_session_are_refused(store, tmp_path, target):
    (tmp_path / "outside.txt").write_text("secret")
    with pytest.raises(RegistrationError):
        store.register_file(target)
    assert store.entries() == []


def test_a_symlink_pointing_outside_is_refused(store, tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    (store.workspace / "link.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(RegistrationError):
        store.register_file("link.txt")
    with pytest.raises(RegistrationError):
        store.register_file("link.txt", in_place=True)


def test_directories_and_missing_files_are_refused(store):
    (store.workspace / "sub").mkdir()
    for target in ("sub", "missing.txt"):
        with pytest.raises(RegistrationError):
            store.register_file(target)


def test_remove_drops_the_entry_and_its_copy_but_not_a_workspace_file(store):
    write(store, "a.txt", b"a")
    copy = store.register_file("a.txt")
    in_place = store.register_file("a.txt", in_place=True)
    store.remove(copy.attachment_id)
    store.remove(in_place.attachment_id)
    assert store.entries() == []
    assert not (store.session_dir / copy.path).exists()
    assert (store.workspace / "a.txt").exists()


def test_copying_a_file_already_registered_in_place_reuses_its_entry(store):
    write(store, "chart.png", PNG_1x1)
    in_place = store.register_file("chart.png", in_place=True, source="workspace")
    copy = store.register_file("chart.png", node_id="plot")
    assert copy.attachment_id == in_place.attachment_id
    assert [e.path for e in store.entries()] == [copy.path]


def test_from_env_needs_the_runner_variables():
    with pytest.raises(RuntimeError, match="MAC_SESSION_DIR"):
        AttachmentStore.from_env({})
    store = AttachmentStore.from_env({"MAC_SESSION_DIR": "/tmp/x", "MAC_SESSION_ID": "x"})
    assert store.session_id == "x"


REGISTER_SCRIPT = """
import sys
from attachments.store import AttachmentStore
store = AttachmentStore.from_env()
tag = sys.argv[1]
for i in range(int(sys.argv[2])):
    store.register_bytes(f"{tag}-{i}".encode(), f"{tag}-{i}.txt", node_id=tag)
"""


@pytest.mark.django_db(transaction=True)
def test_concurrent_processes_and_uploads_never_lose_an_entry():
    session = new_session()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MAC_SESSION_DIR": str(session.directory),
        "MAC_SESSION_ID": session.session_id,
    }
    processes = [
        subprocess.Popen([sys.executable, "-c", REGISTER_SCRIPT, f"p{n}", "10"], env=env)
        for n in range(4)
    ]

    def upload_some():
        for i in range(5):
            body, content_type = multipart([("file", f"up-{i}.txt", b"upload %d" % i)])
            reply = DjangoPath().post(f"/api/uploads/{session.session_id}", body, content_type)
            assert reply.status == 201

    uploader = threading.Thread(target=upload_some)
    uploader.start()
    assert [p.wait(60) for p in processes] == [0] * 4
    uploader.join(60)

    manifest = json.loads(
        (session.directory / "code_workspace/attachments/attachments_manifest.json").read_text()
    )
    names = sorted(a["name"] for a in manifest["attachments"])
    expected = sorted(
        [f"p{n}-{i}.txt" for n in range(4) for i in range(10)] + [f"up-{i}.txt" for i in range(5)]
    )
    assert names == expected
    report = sync_session_from_manifest(session)
    assert (report.created, report.removed) == (40, 0)
    assert (
        sorted(Attachment.objects.filter(session=session).values_list("name", flat=True))
        == expected
    )


@pytest.mark.django_db
def test_sync_keeps_purged_rows_as_tombstones_and_purge_removes_the_directory():
    session = new_session()
    store = AttachmentStore(session.directory, session.session_id)
    write(store, "result.json", b"{}")
    store.register_file("result.json", in_place=True, source="workspace")
    store.register_bytes(b"x", "x.txt")
    sync_session_from_manifest(session)
    assert purge_attachments(session) == 2
    assert not store.attachments.exists()
    assert (store.workspace / "result.json").exists()
    rows = Attachment.objects.filter(session=session)
    assert rows.count() == 2 and all(row.purged_at is not None for row in rows)
    report = sync_session_from_manifest(session)
    assert (report.created, report.updated, report.removed) == (0, 0, 0)
    assert Attachment.objects.filter(session=session, purged_at__isnull=False).count() == 2
