from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attachments import manifest as manifest_module
from attachments.manifest import AttachmentEntry, Manifest, ManifestError, make_directories


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


def _temp_files(manifest: Manifest) -> dict[int, Path]:
    return {p.stat().st_ino: p for p in manifest.directory.iterdir() if p.name.endswith(".tmp")}


def _large_manifest(tmp_path: Path) -> Manifest:
    """
    A manifest past SPARE_MIN_BYTES, saved twice by appending: the file the
    second save replaced is kept as the spare of the next.
    """
    from attachments.manifest import SPARE_MIN_BYTES

    manifest = Manifest(tmp_path, "s1")
    with manifest.edit() as document:
        for n in range(SPARE_MIN_BYTES // 200):
            document.append(entry(f"att_{n:012d}", name=f"base-{n}-" + "x" * 40))
    assert manifest.path.stat().st_size >= SPARE_MIN_BYTES
    with manifest.edit() as document:
        document.append(entry("att_second"))
    assert len(_temp_files(manifest)) == 1
    return manifest


def _assert_whole(manifest: Manifest) -> bytes:
    """The file in place is a full encoding of what it holds, and what a reader parses."""
    written = manifest.path.read_bytes()
    assert written == manifest.read().to_json().encode("utf-8")
    assert json.loads(written) == manifest.read().to_dict()
    return written


def test_a_large_manifest_is_saved_over_the_one_it_replaced_with_the_same_bytes(
    tmp_path: Path,
):
    manifest = _large_manifest(tmp_path)
    steps = [
        lambda doc: doc.append(entry("att_one", name="é.txt")),
        lambda doc: [doc.append(entry(f"att_many{n}")) for n in range(40)],
        lambda doc: None,  # a save that appends nothing
        lambda doc: doc.upsert(entry("att_one", size=7)),  # not an append: written whole
        lambda doc: doc.append(entry("att_after_upsert")),  # no spare yet: written whole
        lambda doc: doc.remove("att_many3"),
        lambda doc: doc.append(entry("att_after_remove")),
        lambda doc: doc.append(entry("att_last")),
    ]
    on_spare = []
    for step in steps:
        spares = _temp_files(manifest)
        with manifest.edit() as document:
            step(document)
            ids = [e.attachment_id for e in document.attachments]
        on_spare.append(manifest.path.stat().st_ino in spares)
        written = _assert_whole(manifest)
        assert [e["attachment_id"] for e in json.loads(written)["attachments"]] == ids
        assert len(_temp_files(manifest)) <= 1
    assert on_spare == [True, True, True, False, False, False, False, True]


@pytest.mark.parametrize("reader", ["this process", "another process"])
def test_a_spare_that_a_reader_still_has_open_is_not_written_over(tmp_path: Path, reader: str):
    manifest = _large_manifest(tmp_path)
    if reader == "this process":
        held = open(manifest.path, "rb")  # noqa: SIM115 (held across the saves)
        descriptor = f"/proc/self/fd/{held.fileno()}"
        stop = held.close
    else:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; f = open(sys.argv[1], 'rb'); sys.stdin.read()",
                str(manifest.path),
            ],
            stdin=subprocess.PIPE,
        )
        descriptor = _wait_until_open_by(process.pid, manifest.path)
        stop = lambda: process.communicate(b"", timeout=30)  # noqa: E731
    held_inode = manifest.path.stat().st_ino
    as_opened = manifest.path.read_bytes()
    try:
        for n in range(3):  # the first makes the held file a spare, the next would reuse it
            with manifest.edit() as document:
                document.append(entry(f"att_later{n}"))
            assert manifest.path.stat().st_ino != held_inode
            _assert_whole(manifest)
        assert held_inode not in _temp_files(manifest)
        # What the reader has open still holds what it opened.
        with open(descriptor, "rb") as again:
            assert again.read() == as_opened
    finally:
        stop()
    # Once nobody has it, a spare is written over again.
    spares = _temp_files(manifest)
    with manifest.edit() as document:
        document.append(entry("att_after_readers"))
    assert manifest.path.stat().st_ino in spares


def _wait_until_open_by(pid: int, path: Path) -> str:
    """The /proc path of the descriptor by which process `pid` has `path` open, once it has."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.path.realpath(f"/proc/{pid}/fd/{fd}") == str(path):
                    return f"/proc/{pid}/fd/{fd}"
        time.sleep(0.01)
    raise AssertionError(f"{path} was not opened by {pid}")


def test_a_spare_written_for_a_save_that_is_then_discarded_leaves_the_manifest_as_it_was(
    tmp_path: Path,
):
    manifest = _large_manifest(tmp_path)
    before = manifest.path.read_bytes()
    spares = _temp_files(manifest)
    with manifest.locked() as document:
        document.append(entry("att_rolled_back"))
        prepared = manifest.prepare(document)
        assert prepared.temp_path in spares.values()
        manifest.discard(prepared)  # as a failed transaction does
    assert manifest.path.read_bytes() == before
    assert _temp_files(manifest) == {}
    with manifest.edit() as document:
        document.append(entry("att_next"))
    ids = [e.attachment_id for e in manifest.read().attachments]
    assert "att_rolled_back" not in ids and ids[-1] == "att_next"
    _assert_whole(manifest)


def test_a_spare_that_reconciliation_removed_is_not_used(tmp_path: Path):
    manifest = _large_manifest(tmp_path)
    for path in _temp_files(manifest).values():
        path.unlink()  # as reconciliation does, under the lock
    with manifest.edit() as document:
        document.append(entry("att_new"))
    written = _assert_whole(manifest)
    assert json.loads(written)["attachments"][-1]["attachment_id"] == "att_new"


def test_spares_are_removed_at_exit(tmp_path: Path):
    from attachments import manifest as manifest_module

    manifest = _large_manifest(tmp_path)
    assert len(_temp_files(manifest)) == 1
    manifest_module._spares.close()
    assert _temp_files(manifest) == {}
    with manifest.edit() as document:  # and saves go on, written whole
        document.append(entry("att_new"))
    assert manifest.read().attachments[-1].attachment_id == "att_new"


def test_a_writer_killed_in_the_middle_of_its_saves_leaves_a_whole_manifest(tmp_path: Path):
    """kill -9 of a process appending to a large manifest, over its spares, five times."""
    manifest = _large_manifest(tmp_path)
    context = multiprocessing.get_context("spawn")
    for writer in range(5):
        before = len(manifest.read().attachments)
        process = context.Process(
            target=_write_entries, args=(str(tmp_path), writer, 100_000, True)
        )
        process.start()
        deadline = time.monotonic() + 60
        # Killed once it has saved a few times, so over its spares, at whatever step it is.
        while len(manifest.read().attachments) < before + 5 + 3 * writer:
            assert time.monotonic() < deadline and process.is_alive()
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.join(30)
        _assert_whole(manifest)
        ids = [e.attachment_id for e in manifest.read().attachments]
        assert len(ids) == len(set(ids))
        # Every save was all or nothing: the writer's entries are its first n, in order.
        written = [i for i in ids if i.startswith(f"att_w{writer:02d}i")]
        assert written == [f"att_w{writer:02d}i{i:08d}" for i in range(len(written))]
        # What the killed process left (its spare, a save it had begun) does not stop the next.
        with manifest.edit() as document:
            document.append(entry(f"att_after_kill{writer}"))
        _assert_whole(manifest)
        assert manifest.read().attachments[-1].attachment_id == f"att_after_kill{writer}"


def test_processes_appending_to_a_large_manifest_lose_no_entry_and_write_whole_files(
    tmp_path: Path,
):
    """Each process keeps its own spare; another's save makes it stale."""
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
    _assert_whole(manifest)
    # The processes removed their spares when they exited; this one's is left.
    assert len(_temp_files(manifest)) <= 1


def test_make_directories_syncs_each_directory_that_holds_a_new_one(tmp_path: Path, monkeypatch):
    synced = []
    real = manifest_module.sync_directory
    monkeypatch.setattr(
        manifest_module, "sync_directory", lambda path: synced.append(path) or real(path)
    )
    make_directories(tmp_path / "a" / "b" / "c")
    assert (tmp_path / "a" / "b" / "c").is_dir()
    assert synced == [tmp_path / "a" / "b", tmp_path / "a", tmp_path]
    synced.clear()
    make_directories(tmp_path / "a" / "b" / "c")  # nothing new: nothing to sync
    make_directories(tmp_path / "a" / "d")
    assert synced == [tmp_path / "a"]
