from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from attachments.manifest import AttachmentEntry, Manifest, ManifestError


def entry(attachment_id: str, **changes) -> AttachmentEntry:
    values = dict(
        attachment_id=attachment_id,
        name=f"{attachment_id}.txt",
        path=f"code_workspace/attachments/{attachment_id}/{attachment_id}.txt",
        mime="text/plain",
        kind="file",
        size=1,
        sha256="0" * 64,
        source="user_upload",
        created_at="2026-01-01T00:00:00+00:00",
        updated_at="2026-01-01T00:00:00+00:00",
    )
    values.update(changes)
    return AttachmentEntry(**values)


def test_absent_manifest_reads_as_empty(tmp_path: Path):
    assert Manifest(tmp_path, "s1").read().attachments == []


def test_edit_writes_json_that_other_tools_can_read(tmp_path: Path):
    manifest = Manifest(tmp_path, "s1")
    with manifest.edit() as document:
        document.upsert(entry("att_aaaaaaaaaaaa"))
    data = json.loads(manifest.path.read_text())
    assert data["version"] == 1
    assert data["session_id"] == "s1"
    assert [a["attachment_id"] for a in data["attachments"]] == ["att_aaaaaaaaaaaa"]
    assert manifest.path == tmp_path / "code_workspace/attachments/attachments_manifest.json"


def test_upsert_replaces_an_entry_with_the_same_id(tmp_path: Path):
    manifest = Manifest(tmp_path, "s1")
    with manifest.edit() as document:
        document.upsert(entry("att_aaaaaaaaaaaa", size=1))
    with manifest.edit() as document:
        document.upsert(entry("att_aaaaaaaaaaaa", size=2))
    assert [(e.attachment_id, e.size) for e in manifest.read().attachments] == [
        ("att_aaaaaaaaaaaa", 2)
    ]


def test_a_failing_edit_leaves_the_file_as_it_was(tmp_path: Path):
    manifest = Manifest(tmp_path, "s1")
    with manifest.edit() as document:
        document.upsert(entry("att_aaaaaaaaaaaa"))
    before = manifest.path.read_bytes()
    with pytest.raises(RuntimeError), manifest.edit() as document:
        document.upsert(entry("att_bbbbbbbbbbbb"))
        raise RuntimeError("boom")
    assert manifest.path.read_bytes() == before


def test_no_temporary_files_are_left_behind(tmp_path: Path):
    manifest = Manifest(tmp_path, "s1")
    for i in range(3):
        with manifest.edit() as document:
            document.upsert(entry(f"att_{i:012d}"))
    leftovers = [p.name for p in manifest.directory.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_unknown_fields_from_newer_writers_are_ignored(tmp_path: Path):
    manifest = Manifest(tmp_path, "s1")
    manifest.directory.mkdir(parents=True)
    data = {"attachments": [dict(entry("att_aaaaaaaaaaaa").to_dict(), future_field=1)]}
    manifest.path.write_text(json.dumps(data))
    assert manifest.read().attachments[0].attachment_id == "att_aaaaaaaaaaaa"


def test_a_corrupt_manifest_is_reported(tmp_path: Path):
    manifest = Manifest(tmp_path, "s1")
    manifest.directory.mkdir(parents=True)
    manifest.path.write_text("{not json")
    with pytest.raises(ManifestError):
        manifest.read()


def _write_entries(session_path: str, worker: int, count: int, append: bool) -> None:
    manifest = Manifest(Path(session_path), "s1")
    for i in range(count):
        with manifest.edit() as document:
            added = entry(f"att_w{worker:02d}i{i:08d}")
            if append:
                document.append(added)
            else:
                document.upsert(added)


def _run_writers(session_path: Path, workers: int, per_worker: int, append: bool = False) -> None:
    """`workers` processes writing `per_worker` entries each into one manifest, all at once."""
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_write_entries, args=(str(session_path), w, per_worker, append))
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0


def test_concurrent_writers_in_separate_processes_lose_no_entry(tmp_path: Path):
    workers, per_worker = 6, 25
    _run_writers(tmp_path, workers, per_worker)
    ids = {e.attachment_id for e in Manifest(tmp_path, "s1").read().attachments}
    assert ids == {f"att_w{w:02d}i{i:08d}" for w in range(workers) for i in range(per_worker)}


def test_saves_that_encode_only_appended_entries_write_what_a_full_encoding_would(
    tmp_path: Path,
):
    """Appends, replacements, removals and reassignments, save after save, in one process."""
    manifest = Manifest(tmp_path, "s1")
    steps = [
        lambda doc: [doc.append(entry(f"a{n}", name=f"é{n}.txt")) for n in range(3)],
        lambda doc: doc.append(entry("b")),
        lambda doc: doc.upsert(entry("a1", size=99)),
        lambda doc: [doc.append(entry(f"c{n}")) for n in range(40)],
        # One entry per save, past the number of pieces that are joined into one.
        *[lambda doc, n=n: doc.append(entry(f"g{n}")) for n in range(36)],
        lambda doc: doc.remove("a0"),
        lambda doc: doc.append(entry("d")),
        lambda doc: setattr(doc, "attachments", doc.attachments[:5]),
        lambda doc: doc.append(entry("e")),
        lambda doc: [doc.remove(e.attachment_id) for e in list(doc.attachments)],
        lambda doc: doc.append(entry("f")),
    ]
    expected: list[str] = []
    for step in steps:
        with manifest.edit() as document:
            step(document)
            ids = [e.attachment_id for e in document.attachments]
        written = manifest.path.read_bytes()
        assert written == manifest.read().to_json().encode("utf-8")
        assert [e["attachment_id"] for e in json.loads(written)["attachments"]] == ids
        expected = ids
    assert [e.attachment_id for e in manifest.read().attachments] == expected == ["f"]


def _settle() -> None:
    """Wait for the copies being written ahead."""
    from attachments import manifest as manifest_module

    executor = manifest_module._prewriter._executor
    if executor is not None:
        executor.submit(lambda: None).result(10)


def _temp_files(manifest: Manifest) -> dict[int, Path]:
    return {p.stat().st_ino: p for p in manifest.directory.iterdir() if p.name.endswith(".tmp")}


def _large_manifest(tmp_path: Path) -> Manifest:
    """A manifest past PREWRITE_MIN_BYTES, whose next save is written ahead."""
    from attachments.manifest import PREWRITE_MIN_BYTES

    manifest = Manifest(tmp_path, "s1")
    with manifest.edit() as document:
        for n in range(PREWRITE_MIN_BYTES // 200):
            document.append(entry(f"att_{n:012d}", name=f"base-{n}-" + "x" * 40))
    assert manifest.path.stat().st_size >= PREWRITE_MIN_BYTES
    _settle()
    return manifest


def test_a_large_manifest_is_appended_to_on_a_copy_written_ahead_with_the_same_bytes(
    tmp_path: Path,
):
    manifest = _large_manifest(tmp_path)
    steps = [
        lambda doc: doc.append(entry("att_one", name="é.txt")),
        lambda doc: [doc.append(entry(f"att_many{n}")) for n in range(40)],
        lambda doc: None,  # a save that appends nothing
        lambda doc: doc.upsert(entry("att_one", size=7)),  # not an append: written whole
        lambda doc: doc.append(entry("att_after_upsert")),
        lambda doc: doc.remove("att_many3"),
        lambda doc: doc.append(entry("att_last")),
    ]
    on_copy = []
    for step in steps:
        ahead = _temp_files(manifest)
        with manifest.edit() as document:
            step(document)
            ids = [e.attachment_id for e in document.attachments]
        on_copy.append(manifest.path.stat().st_ino in ahead)
        written = manifest.path.read_bytes()
        # A full encoding of the document, and what a reader parses.
        assert written == manifest.read().to_json().encode("utf-8")
        assert json.loads(written) == manifest.read().to_dict()
        assert [e["attachment_id"] for e in json.loads(written)["attachments"]] == ids
        _settle()
    assert on_copy == [True, True, True, False, True, False, True]


def test_a_copy_written_ahead_that_reconciliation_removed_is_not_used(tmp_path: Path):
    manifest = _large_manifest(tmp_path)
    for path in _temp_files(manifest).values():
        path.unlink()  # as reconciliation does, under the lock
    with manifest.edit() as document:
        document.append(entry("att_new"))
    written = manifest.path.read_bytes()
    assert json.loads(written)["attachments"][-1]["attachment_id"] == "att_new"
    assert written == manifest.read().to_json().encode("utf-8")


def test_copies_written_ahead_are_removed_at_exit(tmp_path: Path):
    from attachments import manifest as manifest_module

    manifest = _large_manifest(tmp_path)
    assert len(_temp_files(manifest)) == 1
    manifest_module._prewriter.close()
    assert _temp_files(manifest) == {}
    with manifest.edit() as document:  # and saves go on, written whole
        document.append(entry("att_new"))
    assert manifest.read().attachments[-1].attachment_id == "att_new"


def test_processes_appending_to_a_large_manifest_lose_no_entry_and_write_whole_files(
    tmp_path: Path,
):
    """Each process writes ahead for its own next save; another's save makes that copy stale."""
    manifest = _large_manifest(tmp_path)
    before = [e.attachment_id for e in manifest.read().attachments]
    workers, per_worker = 4, 30
    _run_writers(tmp_path, workers, per_worker, append=True)
    data = json.loads(manifest.path.read_bytes())
    ids = [e["attachment_id"] for e in data["attachments"]]
    assert ids[: len(before)] == before
    assert sorted(ids[len(before) :]) == sorted(
        f"att_w{w:02d}i{i:08d}" for w in range(workers) for i in range(per_worker)
    )
    assert len(ids) == len(set(ids))
    # Whole, as a full encoding of what it holds writes it.
    assert manifest.path.read_bytes() == manifest.read().to_json().encode("utf-8")
    # The processes removed their copies when they exited; this one's is left.
    assert len(_temp_files(manifest)) <= 1
