"""The session zip, built without the HTTP layer."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from attachments import archive, paths
from attachments.archive import ArchiveChanged, SessionArchive, select_entries, walk_session
from attachments.selection import FileFilters

from .builders import PNG_1x1, attach, directory_hashes, new_session, zip_hashes

pytestmark = pytest.mark.django_db


def build(session, *, compress: bool = True, filters: FileFilters | None = None) -> bytes:
    built = SessionArchive.for_session(session, filters or FileFilters(), compress=compress)
    return b"".join(built.chunks())


@pytest.fixture
def session():
    session = new_session()
    attach(session, "notes.md", b"# Notes\n" * 500)
    attach(session, "dot.png", PNG_1x1)
    workspace = session.directory / "code_workspace"
    (workspace / "result.json").write_text('{"rows": 3}')
    (workspace / "deep" / "er").mkdir(parents=True)
    (workspace / "deep" / "er" / "data.csv").write_bytes(b"a,b\n" + b"1,2\n" * 10_000)
    (workspace / "random.bin").write_bytes(os.urandom(300_000))
    (workspace / "empty.txt").write_bytes(b"")
    (workspace / "ünïcode name.txt").write_text("unicode")
    return session


@pytest.fixture
def outside(tmp_path) -> Path:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("not part of any session")
    return secret


class TestContent:
    @pytest.mark.parametrize("compress", [True, False], ids=["deflated", "stored"])
    def test_unzips_to_the_directory_byte_for_byte(self, session, compress):
        expected = directory_hashes(session.directory)
        assert "code_workspace/attachments/attachments_manifest.json" in expected
        assert (
            session.directory / "code_workspace/attachments/.attachments_manifest.lock"
        ).exists()
        assert zip_hashes(build(session, compress=compress)) == expected

    def test_entry_names_are_paths_relative_to_the_session(self, session):
        attachment = session.attachments.get(name="notes.md")
        names = zipfile.ZipFile(io.BytesIO(build(session))).namelist()
        assert attachment.path in names
        assert "code_workspace/result.json" in names
        assert not any(name.startswith("/") or ".." in name.split("/") for name in names)

    def test_order_is_stable(self, session):
        first = [e.arcname for e in walk_session(session.directory)]
        assert first == [e.arcname for e in walk_session(session.directory)]

    def test_compressed_formats_are_stored_and_the_rest_deflated(self, session):
        with zipfile.ZipFile(io.BytesIO(build(session))) as zf:
            types = {info.filename.rsplit("/", 1)[-1]: info.compress_type for info in zf.infolist()}
        assert types["dot.png"] == zipfile.ZIP_STORED
        assert types["notes.md"] == zipfile.ZIP_DEFLATED
        assert types["data.csv"] == zipfile.ZIP_DEFLATED

    def test_large_files_that_do_not_deflate_are_stored(self, session):
        workspace = session.directory / "code_workspace"
        (workspace / "noise.dat").write_bytes(os.urandom(archive.PROBE_MIN_SIZE))
        (workspace / "text.dat").write_bytes(b"abc," * (archive.PROBE_MIN_SIZE // 4))
        (workspace / "small-noise.dat").write_bytes(os.urandom(1000))
        with zipfile.ZipFile(io.BytesIO(build(session))) as zf:
            assert zf.getinfo("code_workspace/noise.dat").compress_type == zipfile.ZIP_STORED
            assert zf.getinfo("code_workspace/text.dat").compress_type == zipfile.ZIP_DEFLATED
            # Small files are not probed: deflating them costs little.
            assert (
                zf.getinfo("code_workspace/small-noise.dat").compress_type == zipfile.ZIP_DEFLATED
            )
            assert zf.testzip() is None

    def test_the_compression_level_follows_the_setting(self, session, settings):
        sizes = {}
        for level in (1, 9):
            settings.ATTACHMENTS_ZIP_COMPRESS_LEVEL = level
            with zipfile.ZipFile(io.BytesIO(build(session))) as zf:
                sizes[level] = zf.getinfo("code_workspace/deep/er/data.csv").compress_size
        assert sizes[9] < sizes[1]

    def test_compress_false_stores_everything(self, session):
        with zipfile.ZipFile(io.BytesIO(build(session, compress=False))) as zf:
            assert {info.compress_type for info in zf.infolist()} == {zipfile.ZIP_STORED}

    def test_an_empty_session_is_an_empty_zip(self):
        session = new_session()
        for compress in (True, False):
            with zipfile.ZipFile(io.BytesIO(build(session, compress=compress))) as zf:
                assert zf.namelist() == []

    def test_a_session_without_a_directory_is_an_empty_zip(self, session):
        shutil.rmtree(session.directory)
        assert zipfile.ZipFile(io.BytesIO(build(session))).namelist() == []


class TestLinks:
    def test_a_link_to_a_file_outside_is_left_out(self, session, outside):
        link = session.directory / "code_workspace" / "leak.txt"
        link.symlink_to(outside)
        names = [e.arcname for e in walk_session(session.directory)]
        assert "code_workspace/leak.txt" not in names
        assert b"not part of any session" not in build(session, compress=False)

    def test_a_hard_link_to_a_file_outside_is_left_out(self, session, outside):
        os.link(outside, session.directory / "code_workspace" / "db.sqlite3")
        names = [e.arcname for e in walk_session(session.directory)]
        assert "code_workspace/db.sqlite3" not in names
        assert b"not part of any session" not in build(session, compress=False)

    @pytest.mark.parametrize("compress", [True, False], ids=["deflated", "stored"])
    def test_entry_names_never_hold_backslashes_or_control_characters(self, session, compress):
        workspace = session.directory / "code_workspace"
        (workspace / "..\\..\\..\\zipslip.txt").write_text("slip")
        (workspace / "new\nline\x1b.txt").write_text("control")
        with open(os.path.join(os.fsencode(workspace), b"bad-\xff.txt"), "wb") as undecodable:
            undecodable.write(b"bytes")
        with zipfile.ZipFile(io.BytesIO(build(session, compress=compress))) as built:
            names = built.namelist()
            assert built.read("code_workspace/.._.._.._zipslip.txt") == b"slip"
        assert not any("\\" in n or any(ord(c) < 32 for c in n) for n in names)
        assert "code_workspace/newline.txt" in names
        assert "code_workspace/bad-\ufffd.txt" in names
        assert all(".." not in n.split("/") for n in names)

    def test_a_link_to_a_directory_outside_is_not_followed(self, session, outside):
        (session.directory / "code_workspace" / "escape").symlink_to(outside.parent)
        names = [e.arcname for e in walk_session(session.directory)]
        assert not any(name.startswith("code_workspace/escape") for name in names)

    def test_a_relative_link_climbing_out_is_left_out(self, session, outside):
        link = session.directory / "code_workspace" / "climb.txt"
        link.symlink_to(os.path.relpath(outside, link.parent))
        assert "code_workspace/climb.txt" not in [
            e.arcname for e in walk_session(session.directory)
        ]

    def test_a_link_to_a_file_inside_is_zipped_with_its_content(self, session):
        workspace = session.directory / "code_workspace"
        (workspace / "latest.json").symlink_to(workspace / "result.json")
        hashes = zip_hashes(build(session))
        assert hashes["code_workspace/latest.json"] == hashes["code_workspace/result.json"]

    def test_dangling_links_fifos_and_internal_files_are_left_out(self, session):
        workspace = session.directory / "code_workspace"
        (workspace / "dangling").symlink_to(workspace / "nowhere")
        os.mkfifo(workspace / "pipe")
        (workspace / "attachments" / ".manifest-abc.tmp").write_text("half a manifest")
        names = [e.arcname for e in walk_session(session.directory)]
        assert not {"code_workspace/dangling", "code_workspace/pipe"} & set(names)
        assert not any(name.rsplit("/", 1)[-1].startswith(".") for name in names)

    def test_a_file_swapped_for_a_link_after_listing_is_not_read(self, session, outside):
        built = SessionArchive.for_session(session, FileFilters(), compress=True)
        target = session.directory / "code_workspace" / "result.json"
        target.unlink()
        target.symlink_to(outside)
        data = b"".join(built.chunks())
        assert b"not part of any session" not in data
        assert "code_workspace/result.json" not in zipfile.ZipFile(io.BytesIO(data)).namelist()


class TestFilters:
    def names(self, session, filters: FileFilters) -> list[str]:
        return [e.arcname.rsplit("/", 1)[-1] for e in select_entries(session.directory, filters)]

    def test_extensions(self, session):
        names = set(self.names(session, FileFilters(extensions=("csv", "md"))))
        assert names == {"notes.md", "data.csv"}

    def test_max_size(self, session):
        names = set(self.names(session, FileFilters(max_size=20)))
        assert names == {"result.json", "empty.txt", "ünïcode name.txt"}

    def test_mime_prefix_uses_the_recorded_type_then_sniffs(self, session):
        built = SessionArchive.for_session(
            session, FileFilters(mime_types=("image/", "text/csv")), compress=True
        )
        assert {e.name for e in built.entries} == {"dot.png", "data.csv"}

    def test_only_paths(self, session):
        entries = select_entries(
            session.directory, FileFilters(), only_paths={"code_workspace/result.json"}
        )
        assert [e.arcname for e in entries] == ["code_workspace/result.json"]


class TestStored:
    def test_size_is_announced_exactly(self, session):
        built = SessionArchive.for_session(session, FileFilters(), compress=False)
        assert built.size == len(b"".join(built.chunks()))

    def test_etag_follows_the_content(self, session):
        first = SessionArchive.for_session(session, FileFilters(), compress=False).etag
        assert first == SessionArchive.for_session(session, FileFilters(), compress=False).etag
        (session.directory / "code_workspace" / "result.json").write_text('{"rows": 4}')
        assert first != SessionArchive.for_session(session, FileFilters(), compress=False).etag

    def test_compressed_archives_have_neither_size_nor_etag(self, session):
        built = SessionArchive.for_session(session, FileFilters(), compress=True)
        assert (built.size, built.etag) == (None, None)

    @pytest.mark.parametrize(
        ("start", "length"), [(0, 10), (5, 1), (1000, -1), (0, -1), (7, 70_000)]
    )
    def test_slices_are_the_same_bytes(self, session, start, length):
        built = SessionArchive.for_session(session, FileFilters(), compress=False)
        whole = b"".join(built.chunks())
        end = None if length < 0 else start + length
        assert b"".join(built.chunks(start, length)) == whole[start:end]

    def test_a_file_changed_after_the_length_was_announced_ends_the_stream(self, session):
        built = SessionArchive.for_session(session, FileFilters(), compress=False)
        (session.directory / "code_workspace" / "result.json").write_text("{}")
        with pytest.raises(ArchiveChanged):
            b"".join(built.chunks())

    def test_a_stored_zip_keeps_the_manifest_it_listed_while_uploads_replace_it(self, session):
        manifest = paths.manifest_path(session.directory)
        listed = manifest.read_bytes()
        built = SessionArchive.for_session(session, FileFilters(), compress=False)
        attach(session, "later.txt", b"recorded after the zip was listed")
        assert manifest.read_bytes() != listed
        body = b"".join(built.chunks())
        assert len(body) == built.size
        with zipfile.ZipFile(io.BytesIO(body)) as zipped:
            assert zipped.read(f"code_workspace/attachments/{paths.MANIFEST_NAME}") == listed
            assert not any(name.endswith("later.txt") for name in zipped.namelist())

    def test_a_stored_zip_keeps_a_large_manifest_it_listed_while_saves_reuse_replaced_ones(
        self, session
    ):
        # Past SPARE_MIN_BYTES, a save writes over the manifest replaced by
        # the save before, unless someone (this zip) still has it open.
        from attachments.manifest import SPARE_MIN_BYTES, Manifest

        manifest = Manifest(session.directory, session.session_id)
        with manifest.edit() as document:
            first = document.attachments[0]
            for n in range(SPARE_MIN_BYTES // 250):
                document.append(first.replace(attachment_id=f"att_pad{n:08d}"))
        listed = manifest.path.read_bytes()
        built = SessionArchive.for_session(session, FileFilters(), compress=False)
        for n in range(3):
            attach(session, f"later{n}.txt", b"recorded after the zip was listed")
        body = b"".join(built.chunks())
        assert len(body) == built.size
        with zipfile.ZipFile(io.BytesIO(body)) as zipped:
            assert zipped.read(f"code_workspace/attachments/{paths.MANIFEST_NAME}") == listed


def test_zip64_for_a_file_over_4_gib(tmp_path):
    # A sparse file: 4 GiB + 1 of zeros that take no disk.
    session = new_session()
    big = session.directory / "code_workspace" / "big.bin"
    with open(big, "wb") as file:
        file.truncate((4 << 30) + 1)
    built = SessionArchive.for_session(session, FileFilters(), compress=False)
    assert built.size > 4 << 30
    tail = bytearray()
    total = 0
    for chunk in built.chunks():
        total += len(chunk)
        tail = (tail + chunk)[-4096:]
    assert total == built.size
    assert b"PK\x06\x06" in tail and b"PK\x06\x07" in tail  # zip64 end record and locator


def test_is_precompressed():
    assert archive.is_precompressed("photo.JPG")
    assert archive.is_precompressed("bundle.tar.gz")
    assert not archive.is_precompressed("data.csv")
    assert not archive.is_precompressed("README")


@pytest.mark.django_db(transaction=True)
def test_uploads_still_arriving_are_not_zipped(tmp_path):
    from attachments import paths
    from attachments.archive import walk_session
    from attachments.receiving import UploadSink
    from tests.attachments.builders import new_session

    session = new_session()
    arriving = UploadSink(paths.attachments_dir(session.directory), "arriving.bin")
    arriving.write(b"half of it")
    names = [entry.arcname for entry in walk_session(session.directory)]
    assert not any(".staging" in name or "arriving" in name for name in names)
    arriving.abort()
