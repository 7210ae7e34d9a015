"""WorkspaceArtifactHook: workspace files become attachments, at the cost of what changed."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from unittest import mock

import pytest

from attachments.store import AttachmentStore
from workflows import workspace as workspace_module
from workflows.workspace import WorkspaceArtifactHook, WorkspaceChanges


@pytest.fixture
def store(tmp_path: Path) -> AttachmentStore:
    store = AttachmentStore(tmp_path / "session_s1", "s1")
    store.workspace.mkdir(parents=True)
    return store


@pytest.fixture(params=["inotify", "scan"])
def hook(request, store):
    hook = WorkspaceArtifactHook(store, watch=request.param == "inotify")
    hook.prime()
    assert hook.mode == request.param
    yield hook
    hook.close()


def write(store: AttachmentStore, rel: str, data: bytes) -> Path:
    path = store.workspace / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def names(entries) -> list[str]:
    return sorted(e.path.removeprefix("code_workspace/") for e in entries)


def test_created_updated_and_deleted_files(hook, store):
    write(store, "result.json", b"{}")
    write(store, "plots/a.png", b"a")
    changes = hook.check("n1")
    assert names(changes.created) == ["plots/a.png", "result.json"]
    assert {(e.source, e.node_id) for e in changes.created} == {("workspace", "n1")}
    assert names(store.entries()) == ["plots/a.png", "result.json"]

    write(store, "result.json", b'{"rows": 3}')
    changes = hook.check("n2")
    assert (names(changes.created), names(changes.updated)) == ([], ["result.json"])
    updated = changes.updated[0]
    assert updated.node_id == "n2" and updated.size == 11

    (store.workspace / "plots/a.png").unlink()
    changes = hook.check("n3")
    assert names(changes.deleted) == ["plots/a.png"]
    assert names(store.entries()) == ["result.json"]


def test_nothing_changed_means_no_changes_and_no_manifest_write(hook, store):
    write(store, "a.txt", b"a")
    hook.check("n1")
    before = store.manifest.path.stat().st_mtime_ns
    assert not hook.check("n2")
    assert store.manifest.path.stat().st_mtime_ns == before


def test_rewriting_the_same_content_is_not_an_update(hook, store):
    write(store, "a.txt", b"same")
    hook.check("n1")
    write(store, "a.txt", b"same")
    assert not hook.check("n2")


def test_a_removed_directory_deletes_what_was_under_it(hook, store):
    write(store, "out/one.txt", b"1")
    write(store, "out/deep/two.txt", b"2")
    hook.check("n1")
    shutil.rmtree(store.workspace / "out")
    assert names(hook.check("n2").deleted) == ["out/deep/two.txt", "out/one.txt"]


def test_a_moved_directory_is_deleted_here_and_created_there(hook, store):
    write(store, "old/one.txt", b"1")
    hook.check("n1")
    os.rename(store.workspace / "old", store.workspace / "new")
    changes = hook.check("n2")
    assert names(changes.deleted) == ["old/one.txt"]
    assert names(changes.created) == ["new/one.txt"]


def test_attachments_caches_and_temp_files_are_not_reported(hook, store):
    store.register_bytes(b"x", "registered.txt")
    write(store, "__pycache__/m.cpython-311.pyc", b"x")
    write(store, "pkg/__pycache__/m.pyc", b"x")
    write(store, ".cache/pip/blob", b"x")
    write(store, "notebook/.ipynb_checkpoints/n.ipynb", b"x")
    write(store, "module.pyc", b"x")
    write(store, "kept.txt", b"x")
    changes = hook.check("n1")
    assert names(changes.created) == ["kept.txt"]
    assert changes.manifest_changed


def test_symlinks_are_never_registered(hook, store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (store.workspace / "file-link").symlink_to(outside / "secret.txt")
    (store.workspace / "dir-link").symlink_to(outside, target_is_directory=True)
    write(store, "real.txt", b"real")
    assert names(hook.check("n1").created) == ["real.txt"]
    (outside / "secret.txt").write_text("changed")
    (outside / "new.txt").write_text("new")
    assert not hook.check("n2")


def test_hard_links_and_special_files_are_never_registered(hook, store, tmp_path):
    outside = tmp_path / "database.sqlite3"
    outside.write_bytes(b"SQLite format 3")
    os.link(outside, store.workspace / "db-copy")
    os.mkfifo(store.workspace / "pipe")
    write(store, "real.txt", b"real")
    assert names(hook.check("n1").created) == ["real.txt"]
    # A recorded file replaced by a hard link is no longer a workspace file.
    (store.workspace / "real.txt").unlink()
    os.link(outside, store.workspace / "real.txt")
    changes = hook.check("n2")
    assert names(changes.deleted) == ["real.txt"] and not changes.created


def test_unsafe_names_are_skipped_with_a_reason_and_never_fail(hook, store, caplog):
    workspace = os.fsencode(store.workspace)
    with open(os.path.join(workspace, b"bad-\xff\xfe.txt"), "wb") as undecodable:
        undecodable.write(b"x")
    write(store, "..\\..\\..\\zipslip.txt", b"slip")
    write(store, "line\nbreak.txt", b"crlf")
    write(store, "fine.txt", b"fine")
    with caplog.at_level("WARNING", logger="workflows.workspace"):
        changes = hook.check("n1")
    assert names(changes.created) == ["fine.txt"]
    assert [e.name for e in store.entries()] == ["fine.txt"]
    reasons = [r.getMessage() for r in caplog.records]
    assert len(reasons) == 3 and all("not recording" in r for r in reasons)
    # Reported once per path, not at every check.
    caplog.clear()
    write(store, "fine.txt", b"changed")
    with caplog.at_level("WARNING", logger="workflows.workspace"):
        assert names(hook.check("n2").updated) == ["fine.txt"]
    assert not caplog.records


def test_a_file_registered_by_copy_is_not_reported_twice(hook, store):
    write(store, "chart.png", b"png")
    store.register_file("chart.png", node_id="plot")
    changes = hook.check("plot")
    assert changes.created == [] and changes.manifest_changed
    assert len(store.entries()) == 1


def test_a_file_registered_in_place_by_a_node_is_updated_not_duplicated(hook, store):
    write(store, "out.csv", b"a\n")
    registered = store.register_file("out.csv", in_place=True, node_id="n1")
    hook.check("n1")
    write(store, "out.csv", b"a\nb\n")
    changes = hook.check("n2")
    assert [e.attachment_id for e in changes.updated] == [registered.attachment_id]
    assert changes.updated[0].source == "registered"


def test_only_files_whose_signature_moved_are_hashed(hook, store):
    for i in range(20):
        write(store, f"f{i}.txt", b"%d" % i)
    hook.check("n1")
    write(store, "f7.txt", b"changed")
    with mock.patch.object(
        workspace_module, "digest_file", wraps=workspace_module.digest_file
    ) as digest:
        changes = hook.check("n2")
    assert names(changes.updated) == ["f7.txt"]
    assert [call.args[0].name for call in digest.call_args_list] == ["f7.txt"]


def test_an_overflowed_queue_falls_back_to_a_full_comparison(store):
    hook = WorkspaceArtifactHook(store)
    hook.prime()
    if hook.mode != "inotify":
        pytest.skip("inotify is not available here")
    try:
        write(store, "a.txt", b"a")
        hook._watcher.drain()
        hook._watcher.pending.clear()
        hook._watcher.overflowed = True
        assert names(hook.check("n1").created) == ["a.txt"]
    finally:
        hook.close()


async def test_changes_while_a_node_runs_are_reported_after_the_debounce(store):
    seen: list[WorkspaceChanges] = []
    arrived = asyncio.Event()

    async def on_change(changes: WorkspaceChanges) -> None:
        seen.append(changes)
        arrived.set()

    hook = WorkspaceArtifactHook(store, on_change=on_change, debounce=0.05)
    await hook.start()
    try:
        if hook.mode != "inotify":
            pytest.skip("inotify is not available here")
        await hook.before_node("writer")
        write(store, "live.txt", b"live")
        await asyncio.wait_for(arrived.wait(), 10)
        assert names(seen[0].created) == ["live.txt"]
        assert seen[0].created[0].node_id == "writer"
        write(store, "late.txt", b"late")
        changes = await hook.after_node("writer")
        assert names(changes.created) == ["late.txt"]
    finally:
        await hook.stop()


async def test_after_node_sees_everything_a_finished_process_wrote(store):
    hook = WorkspaceArtifactHook(store, debounce=60)
    await hook.start()
    try:
        await hook.before_node("n1")
        process = await asyncio.create_subprocess_exec(
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do mkdir -p d$i && echo $i > d$i/f$i; done",
            cwd=store.workspace,
        )
        assert await process.wait() == 0
        changes = await hook.after_node("n1")
        assert names(changes.created) == [f"d{i}/f{i}" for i in range(1, 9)]
    finally:
        await hook.stop()
