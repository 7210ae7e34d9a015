"""
Resumable uploads, tus 1.0 (attachments.resumable): the protocol's core and
its creation, creation-with-upload, termination, checksum and expiration
extensions, error cases included. A finished upload is an attachment like a
multipart one.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from attachments import holders, paths, resumable
from attachments.models import Attachment, ResumableUpload
from tests.faults import grow, small_filesystem

from .builders import (
    manifest_ids,
    name_of_a_dead_process,
    new_session,
    record_directory_syncs,
    uploaded_files,
)

pytestmark = pytest.mark.django_db(transaction=True)
TUS = {"HTTP_TUS_RESUMABLE": "1.0.0"}


def meta(**fields: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


def create(client, session, length: int, name: str = "big.bin", **extra):
    return client.post(
        f"/api/uploads/{session.session_id}/tus/",
        HTTP_UPLOAD_LENGTH=str(length),
        HTTP_UPLOAD_METADATA=meta(filename=name),
        **TUS,
        **extra,
    )


def patch(client, location: str, offset: int, data: bytes, **extra):
    return client.generic(
        "PATCH",
        location,
        data,
        content_type="application/offset+octet-stream",
        HTTP_UPLOAD_OFFSET=str(offset),
        **TUS,
        **extra,
    )


def checksum(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


@pytest.fixture
def client():
    return APIClient()


@pytest.fixture
def session():
    return new_session()


def test_options_tells_version_extensions_checksums_and_room(client, session, settings):
    settings.ATTACHMENTS_SESSION_MAX_BYTES = 5000
    reply = client.options(f"/api/uploads/{session.session_id}/tus/")
    assert reply.status_code == 204
    assert reply["Tus-Version"] == "1.0.0" and reply["Tus-Resumable"] == "1.0.0"
    assert set(reply["Tus-Extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "termination",
        "checksum",
        "expiration",
    }
    assert "sha256" in reply["Tus-Checksum-Algorithm"].split(",")
    assert reply["Tus-Max-Size"] == "5000"


def test_upload_in_chunks_becomes_an_attachment(client, session):
    data = os.urandom(300_000)
    created = create(client, session, len(data), "report.pdf")
    assert created.status_code == 201 and created["Upload-Offset"] == "0"
    location = created["Location"]
    assert location.startswith("http://") and session.session_id in location
    assert "Upload-Expires" in created
    # Nothing is listed, zipped or counted while bytes arrive.
    first = patch(client, location, 0, data[:100_000])
    assert (first.status_code, first["Upload-Offset"]) == (204, "100000")
    assert uploaded_files(session) == [] or all(
        ".staging" in p.parts for p in uploaded_files(session)
    )
    assert manifest_ids(session) == [] and not Attachment.objects.exists()
    head = client.head(location, **TUS)
    assert (head.status_code, head["Upload-Offset"], head["Upload-Length"]) == (
        200,
        "100000",
        "300000",
    )
    assert head["Cache-Control"] == "no-store"
    last = patch(client, location, 100_000, data[100_000:])
    assert (last.status_code, last["Upload-Offset"]) == (204, "300000")
    attachment = Attachment.objects.get(session=session)
    assert attachment.name == "report.pdf" and attachment.size == len(data)
    assert attachment.sha256 == hashlib.sha256(data).hexdigest()
    assert manifest_ids(session) == [attachment.attachment_id]
    assert (session.directory / attachment.path).read_bytes() == data
    # A client that lost the last answer learns every byte arrived.
    assert client.head(location, **TUS)["Upload-Offset"] == "300000"
    for offset in (5, 300_000):
        again = patch(client, location, offset, b"x")
        assert (again.status_code, again.json()["offset"]) == (409, 300_000)


def test_creation_makes_the_names_leading_to_the_file_durable(client, session, monkeypatch):
    synced = record_directory_syncs(monkeypatch)
    first = ResumableUpload.objects.get(
        upload_id=create(client, session, 10)["Location"].rstrip("/").rsplit("/", 1)[1]
    )
    staging = first.directory.parent
    # The first upload made the staging directory too, named in its parent.
    assert synced == [staging, staging.parent, first.directory]
    synced.clear()
    create(client, session, 10)
    second = ResumableUpload.objects.exclude(pk=first.pk).get()
    assert synced == [staging, second.directory]


def test_creation_with_upload_and_an_empty_file(client, session):
    data = b"all at once"
    reply = client.post(
        f"/api/uploads/{session.session_id}/tus/",
        data,
        content_type="application/offset+octet-stream",
        HTTP_UPLOAD_LENGTH=str(len(data)),
        HTTP_UPLOAD_METADATA=meta(filename="once.txt"),
        **TUS,
    )
    assert (reply.status_code, reply["Upload-Offset"]) == (201, str(len(data)))
    empty = create(client, session, 0, "empty.txt")
    assert empty.status_code == 201
    assert sorted(Attachment.objects.values_list("name", "size")) == [
        ("empty.txt", 0),
        ("once.txt", 11),
    ]


def test_chunks_at_unaligned_offsets_land_byte_for_byte(client, session, settings):
    # Small buffers, so that whole buffers go around the page cache (O_DIRECT)
    # between an unaligned head and tail, as 8 MiB ones do in production.
    settings.ATTACHMENTS_UPLOAD_BUFFER_BYTES = 8192
    data = os.urandom(100_000)
    location = create(client, session, len(data))["Location"]
    for start, end in [(0, 5_000), (5_000, 41_000), (41_000, 41_001), (41_001, 100_000)]:
        reply = patch(client, location, start, data[start:end])
        assert (reply.status_code, reply["Upload-Offset"]) == (204, str(end))
    attachment = Attachment.objects.get()
    assert (session.directory / attachment.path).read_bytes() == data
    assert attachment.sha256 == hashlib.sha256(data).hexdigest()


def test_a_restart_between_chunks_rehashes_what_is_on_disk(client, session):
    data = os.urandom(200_000)
    location = create(client, session, len(data))["Location"]
    patch(client, location, 0, data[:70_000])
    resumable._digests._states.clear()  # what a restart or another worker has
    assert patch(client, location, 70_000, data[70_000:]).status_code == 204
    assert Attachment.objects.get().sha256 == hashlib.sha256(data).hexdigest()


def test_without_tus_resumable_is_412(client, session):
    reply = client.post(f"/api/uploads/{session.session_id}/tus/", HTTP_UPLOAD_LENGTH="10")
    assert reply.status_code == 412 and reply.json()["code"] == "tus_version_unsupported"
    assert reply["Tus-Resumable"] == "1.0.0"


@pytest.mark.parametrize("length", [None, "-1", "ten", "1" * 30])
def test_a_bad_upload_length_is_400(client, session, length):
    extra = {} if length is None else {"HTTP_UPLOAD_LENGTH": length}
    reply = client.post(f"/api/uploads/{session.session_id}/tus/", **TUS, **extra)
    assert reply.status_code == 400 and reply.json()["header"] == "Upload-Length"


def test_metadata_that_is_not_base64_is_400(client, session):
    reply = client.post(
        f"/api/uploads/{session.session_id}/tus/",
        HTTP_UPLOAD_LENGTH="3",
        HTTP_UPLOAD_METADATA="filename %%%",
        **TUS,
    )
    assert reply.status_code == 400 and reply.json()["header"] == "Upload-Metadata"


def test_a_length_over_the_quota_is_refused_at_creation(client, session, settings):
    settings.ATTACHMENTS_SESSION_MAX_BYTES = 1000
    reply = create(client, session, 1001)
    assert reply.status_code == 413 and reply.json()["code"] == "quota_exceeded"
    assert not ResumableUpload.objects.exists()


def test_a_wrong_offset_is_409_and_changes_nothing(client, session):
    location = create(client, session, 100)["Location"]
    patch(client, location, 0, b"x" * 10)
    reply = patch(client, location, 5, b"y" * 10)
    assert reply.status_code == 409 and reply.json()["offset"] == 10
    assert client.head(location, **TUS)["Upload-Offset"] == "10"


def test_a_body_past_the_length_is_400(client, session):
    location = create(client, session, 10)["Location"]
    reply = patch(client, location, 0, b"x" * 11)
    assert reply.status_code == 400
    assert not Attachment.objects.exists()


def test_patch_needs_the_offset_content_type(client, session):
    location = create(client, session, 10)["Location"]
    reply = client.generic(
        "PATCH",
        location,
        b"x",
        content_type="application/octet-stream",
        HTTP_UPLOAD_OFFSET="0",
        **TUS,
    )
    assert reply.status_code == 415


def test_checksums_are_verified_and_a_mismatch_is_discarded(client, session):
    data = b"0123456789" * 100
    location = create(client, session, len(data))["Location"]
    good = patch(client, location, 0, data[:500], HTTP_UPLOAD_CHECKSUM=checksum(data[:500]))
    assert (good.status_code, good["Upload-Offset"]) == (204, "500")
    bad = patch(client, location, 500, data[500:], HTTP_UPLOAD_CHECKSUM=checksum(b"other"))
    assert bad.status_code == 460 and bad.json()["code"] == "checksum_mismatch"
    assert client.head(location, **TUS)["Upload-Offset"] == "500"
    sha1 = patch(
        client, location, 500, data[500:], HTTP_UPLOAD_CHECKSUM=checksum(data[500:], "sha1")
    )
    assert sha1.status_code == 204
    assert Attachment.objects.get().sha256 == hashlib.sha256(data).hexdigest()


def test_an_unknown_checksum_algorithm_is_400(client, session):
    location = create(client, session, 10)["Location"]
    reply = patch(client, location, 0, b"x", HTTP_UPLOAD_CHECKSUM="crc32 AAAA")
    assert reply.status_code == 400 and reply.json()["header"] == "Upload-Checksum"


def test_a_second_writer_at_once_gets_423_saying_when_the_lease_lapses(client, session, settings):
    settings.ATTACHMENTS_TUS_LEASE = 20
    location = create(client, session, 100)["Location"]
    upload = ResumableUpload.objects.get()
    holder = resumable.PatchWriter(upload, 0, None)
    try:
        reply = patch(client, location, 0, b"x" * 10)
        assert reply.status_code == 423 and reply.json()["code"] == "upload_locked"
        # The holder's lease, taken just now, stands for 20 s unless renewed.
        assert reply.json()["retry_after"] in (19, 20)
        assert reply["Retry-After"] == str(reply.json()["retry_after"])
    finally:
        holder.close(True)
        holder.release()


def test_a_lapsed_lease_lets_another_patch_take_over_and_the_old_holder_stops(
    client, session, settings
):
    settings.ATTACHMENTS_TUS_LEASE = 0.6
    data = os.urandom(100)
    location = create(client, session, len(data))["Location"]
    stalled = resumable.PatchWriter(ResumableUpload.objects.get(), 0, None)
    stalled.write(b"x" * 10)
    assert patch(client, location, 0, data[:50]).status_code == 423
    time.sleep(0.7)  # the holder sends nothing for longer than its lease
    taken = patch(client, location, 0, data[:50])
    assert (taken.status_code, taken["Upload-Offset"]) == (204, "50")
    # The old holder's hold lapsed: it writes nothing more and acknowledges nothing.
    with pytest.raises(resumable.UploadLocked):
        stalled.write(b"x" * 10)
    with pytest.raises(resumable.UploadLocked):
        stalled.close(True)
    stalled.release()
    assert client.head(location, **TUS)["Upload-Offset"] == "50"
    assert patch(client, location, 50, data[50:]).status_code == 204
    assert Attachment.objects.get().sha256 == hashlib.sha256(data).hexdigest()


def test_a_long_patch_moves_the_offset_each_time_it_renews_its_lease(client, session):
    data = os.urandom(8 << 20)
    location = create(client, session, len(data))["Location"]
    writer = resumable.PatchWriter(ResumableUpload.objects.get(), 0, None)
    try:
        writer.write(data[: 4 << 20])
        assert client.head(location, **TUS)["Upload-Offset"] == "0"
        writer.renew()
        # Whatever had reached the file is durable and acknowledged, mid-PATCH.
        checkpoint = int(client.head(location, **TUS)["Upload-Offset"])
        assert 0 < checkpoint <= 4 << 20
        with open(ResumableUpload.objects.get().file_path, "rb") as written:
            assert written.read(checkpoint) == data[:checkpoint]
        writer.write(data[4 << 20 :])
        writer.renew()
        # Never the last byte: a complete offset would mean a recorded file.
        assert int(client.head(location, **TUS)["Upload-Offset"]) < len(data)
        writer.close(True)
        writer.finish_upload()
    finally:
        writer.release()
    assert Attachment.objects.get().sha256 == hashlib.sha256(data).hexdigest()


def test_a_checksummed_chunk_moves_the_offset_only_once_verified(client, session):
    data = os.urandom(4 << 20)
    location = create(client, session, 2 * len(data))["Location"]
    wrong = hashlib.sha256(b"something else").digest()
    writer = resumable.PatchWriter(ResumableUpload.objects.get(), 0, ("sha256", wrong))
    try:
        writer.write(data)
        writer.renew()
        # The chunk may yet be discarded: nothing of it is acknowledged.
        assert client.head(location, **TUS)["Upload-Offset"] == "0"
        with pytest.raises(resumable.ChecksumMismatch):
            writer.close(True)
    finally:
        writer.release()
    assert client.head(location, **TUS)["Upload-Offset"] == "0"


def test_a_patch_is_synced_after_its_answer_and_the_last_one_before(client, session):
    data = os.urandom(300_000)
    location = create(client, session, len(data))["Location"]
    assert patch(client, location, 0, data[:100_000]).status_code == 204
    assert resumable.wait_for_syncs(timeout=10)
    upload = ResumableUpload.objects.get()
    assert (upload.offset, upload.synced_offset) == (100_000, 100_000)
    # The last byte's answer waits for its sync: a complete upload is recorded.
    assert patch(client, location, 100_000, data[100_000:]).status_code == 204
    upload = ResumableUpload.objects.get()
    assert (upload.offset, upload.synced_offset, upload.unsynced_on) == (len(data), len(data), "")
    assert Attachment.objects.get().sha256 == hashlib.sha256(data).hexdigest()


def written_but_not_synced(client, session, data: bytes, upto: int, synced: int, boot: str):
    """An upload accepted up to `upto` but synced only up to `synced`, by `boot`."""
    location = create(client, session, len(data))["Location"]
    assert patch(client, location, 0, data[:upto]).status_code == 204
    assert resumable.wait_for_syncs(timeout=10)
    ResumableUpload.objects.update(synced_offset=synced, unsynced_on=boot)
    return location


def last_moved_ago(seconds: float) -> None:
    """The offset last moved `seconds` ago (an upload's expiry runs from its last move)."""
    moved = timezone.now() - timedelta(seconds=seconds)
    ResumableUpload.objects.update(expires_at=moved + timedelta(seconds=resumable.conf.TUS_EXPIRY))


def test_bytes_not_synced_yet_count_on_the_boot_that_wrote_them(client, session):
    # A worker killed between a PATCH's answer and its sync: the bytes are
    # in this boot's page cache, where the next PATCH, on any worker, finds them.
    data = os.urandom(200_000)
    location = written_but_not_synced(client, session, data, 150_000, 0, holders.this_boot())
    assert client.head(location, **TUS)["Upload-Offset"] == "150000"
    assert patch(client, location, 150_000, data[150_000:]).status_code == 204
    assert Attachment.objects.get().sha256 == hashlib.sha256(data).hexdigest()


def test_after_a_reboot_an_upload_resumes_from_its_synced_offset(client, session, caplog):
    data = os.urandom(200_000)
    location = written_but_not_synced(client, session, data, 150_000, 60_000, "a-boot-before")
    last_moved_ago(resumable.conf.TUS_LEASE + 1)
    # The client resumes where the upload said it was: those bytes may be gone.
    reply = patch(client, location, 150_000, data[150_000:])
    assert reply.status_code == 409 and reply.json()["offset"] == 60_000
    assert client.head(location, **TUS)["Upload-Offset"] == "60000"
    assert "resumes at its synced offset 60000, not 150000" in caplog.text
    assert patch(client, location, 60_000, data[60_000:]).status_code == 204
    attachment = Attachment.objects.get()
    assert attachment.size == len(data)
    assert attachment.sha256 == hashlib.sha256(data).hexdigest()


def test_bytes_another_host_has_not_synced_yet_are_waited_for(client, session, settings):
    settings.ATTACHMENTS_TUS_LEASE = 30
    data = os.urandom(200_000)
    location = written_but_not_synced(client, session, data, 150_000, 60_000, "another-host")
    last_moved_ago(10)
    # Alive, that host syncs them in moments; HEAD still says where they end.
    assert client.head(location, **TUS)["Upload-Offset"] == "150000"
    reply = patch(client, location, 150_000, data[150_000:])
    assert reply.status_code == 423 and reply.json()["code"] == "upload_locked"
    assert "still being synced" in reply.json()["detail"] and reply["Retry-After"] == "1"
    # A lease's time later it is taken for dead, and its unsynced bytes with it.
    last_moved_ago(31)
    assert client.head(location, **TUS)["Upload-Offset"] == "60000"


def test_a_sync_that_fails_takes_the_upload_back_to_its_synced_offset(client, session, caplog):
    data = os.urandom(200_000)
    location = written_but_not_synced(client, session, data, 150_000, 60_000, holders.this_boot())
    readable, writable = os.pipe()
    os.close(writable)
    resumable._syncs.start(ResumableUpload.objects.get(), 150_000, readable)  # fsync: EINVAL
    assert resumable.wait_for_syncs(timeout=10)
    assert "Syncing upload" in caplog.text
    assert client.head(location, **TUS)["Upload-Offset"] == "60000"
    assert patch(client, location, 60_000, data[60_000:]).status_code == 204
    assert Attachment.objects.get().sha256 == hashlib.sha256(data).hexdigest()


def held_by(holder: str) -> None:
    """The upload leased, for the next 30 s, by a PATCH of the process `holder`."""
    ResumableUpload.objects.update(
        lease_token="a" * 32,
        lease_expires_at=timezone.now() + timedelta(seconds=30),
        lease_holder=holder,
    )


@pytest.mark.services
def test_on_postgresql_lazy_commits_stay_in_their_own_transaction(client, session):
    location = create(client, session, 10)["Location"]
    upload_id = location.rstrip("/").rsplit("/", 1)[1]

    def synchronous_commit() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    # A lease needs no flush of the WAL; the connection keeps its setting.
    assert resumable._take_lease(session, upload_id, 0, "first") is not None
    assert synchronous_commit() == "on"
    resumable._release_lease(ResumableUpload.objects.get(upload_id=upload_id), "first")
    # Inside a caller's transaction its COMMIT, which may matter, stays durable.
    with transaction.atomic():
        assert resumable._take_lease(session, upload_id, 0, "second") is not None
        assert synchronous_commit() == "on"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
def test_a_patch_that_fills_the_disk_keeps_exactly_the_bytes_that_reached_it(
    client, settings, tmp_path
):
    data = os.urandom(3 * 1024 * 1024)
    with small_filesystem(tmp_path / "small", "2m") as warehouse:
        settings.ATTACHMENTS_WAREHOUSE_DIR = warehouse
        session = new_session()
        location = create(client, session, len(data))["Location"]
        full = patch(client, location, 0, data)
        assert full.status_code == 507 and full.json()["code"] == "insufficient_storage"
        assert "HEAD" in full.json()["detail"]
        kept = int(client.head(location, **TUS)["Upload-Offset"])
        assert 0 < kept < len(data)
        assert ResumableUpload.objects.get().file_path.read_bytes() == data[:kept]
        grow(warehouse, "8m")
        rest = patch(client, location, kept, data[kept:])
        assert (rest.status_code, rest["Upload-Offset"]) == (204, str(len(data)))
        attachment = Attachment.objects.get()
        assert attachment.sha256 == hashlib.sha256(data).hexdigest()
        assert (session.directory / attachment.path).read_bytes() == data


def test_a_lease_whose_holder_died_on_this_machine_is_taken_over_at_once(client, session):
    dead = name_of_a_dead_process()
    data = os.urandom(100)
    location = create(client, session, len(data))["Location"]
    held_by(dead)
    reply = patch(client, location, 0, data)
    assert reply.status_code == 204, reply.content
    assert Attachment.objects.get().sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("holder", ["alive", "elsewhere"])
def test_a_lease_whose_holder_may_live_is_waited_for(client, session, holder):
    location = create(client, session, 100)["Location"]
    # This very process, or one on another machine, which nobody here can see.
    held_by(holders.this_process() if holder == "alive" else "another-boot/1/1234/5678")
    reply = patch(client, location, 0, b"x" * 100)
    assert reply.status_code == 423 and int(reply["Retry-After"]) >= 29
    assert client.delete(location, **TUS).status_code == 423


def all_bytes_acknowledged(client, session, data: bytes) -> tuple[str, ResumableUpload]:
    """A PATCH that brought the last byte and was acknowledged, then not recorded."""
    location = create(client, session, len(data))["Location"]
    writer = resumable.PatchWriter(ResumableUpload.objects.get(), 0, None)
    writer.write(data)
    writer.close(True)  # the offset's commit: every byte is in
    return location, writer.upload


def test_an_upload_whose_worker_died_before_recording_it_is_recorded_by_reconciliation(
    client, session
):
    from artifacts.models import ArtifactEvent
    from attachments.reconcile import reconcile_warehouse

    data = os.urandom(300_000)
    location, upload = all_bytes_acknowledged(client, session, data)
    # The worker died there, holding the lease, its digest gone with it.
    held_by(name_of_a_dead_process())
    resumable._digests.forget(upload.upload_id)
    assert client.head(location, **TUS)["Upload-Offset"] == str(len(data))
    assert not Attachment.objects.exists()

    assert reconcile_warehouse(repair=False).uploads_recorded == [upload.attachment_id]
    assert not Attachment.objects.exists()  # a check changes nothing
    report = reconcile_warehouse(repair=True)

    assert report.uploads_recorded == [upload.attachment_id]
    attachment = Attachment.objects.get()
    assert attachment.attachment_id == upload.attachment_id
    assert attachment.sha256 == hashlib.sha256(data).hexdigest()
    assert manifest_ids(session) == [upload.attachment_id]
    created = ArtifactEvent.objects.get(session=session)
    assert (created.change_type, created.attachment_id) == ("created", upload.attachment_id)
    assert client.head(location, **TUS)["Attachment-Id"] == upload.attachment_id
    assert reconcile_warehouse(repair=True).changes == 0


def test_an_upload_a_live_worker_is_recording_is_left_to_it(client, session):
    from attachments.reconcile import reconcile_warehouse

    all_bytes_acknowledged(client, session, os.urandom(1000))
    held_by(holders.this_process())  # this very process, alive
    assert reconcile_warehouse(repair=True).uploads_recorded == []
    assert not Attachment.objects.exists()
    assert ResumableUpload.objects.get().lease_holder == holders.this_process()


def test_termination_waits_for_a_patch_in_progress(client, session):
    location = create(client, session, 100)["Location"]
    holder = resumable.PatchWriter(ResumableUpload.objects.get(), 0, None)
    try:
        reply = client.delete(location, **TUS)
        assert reply.status_code == 423 and reply.json()["code"] == "upload_locked"
    finally:
        holder.close(True)
        holder.release()
    assert client.delete(location, **TUS).status_code == 204


def test_termination_removes_the_upload_and_its_bytes(client, session):
    location = create(client, session, 100)["Location"]
    patch(client, location, 0, b"x" * 40)
    directory = ResumableUpload.objects.get().directory
    assert directory.exists()
    assert client.delete(location, **TUS).status_code == 204
    assert not directory.exists()
    assert client.head(location, **TUS).status_code == 404


def test_an_expired_upload_is_410_and_removed(client, session):
    location = create(client, session, 100)["Location"]
    upload = ResumableUpload.objects.get()
    ResumableUpload.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.head(location, **TUS).status_code == 410
    assert not upload.directory.exists() and not ResumableUpload.objects.exists()


def test_purge_removes_expired_uploads_only(client, session):
    create(client, session, 100)
    create(client, session, 100, "old.bin")
    old = ResumableUpload.objects.get(name="old.bin")
    ResumableUpload.objects.filter(pk=old.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert resumable.purge_expired() == 1
    assert list(ResumableUpload.objects.values_list("name", flat=True)) == ["big.bin"]
    assert not old.directory.exists()


def test_an_upload_is_bound_to_its_session(client, session):
    location = create(client, session, 100)["Location"]
    other = new_session()
    upload_id = location.rsplit("/", 1)[1]
    reply = client.head(f"/api/uploads/{other.session_id}/tus/{upload_id}", **TUS)
    assert reply.status_code == 404


@pytest.mark.access_policy("token")
def test_the_access_policy_applies(client, session):
    reply = create(client, session, 10)
    assert reply.status_code == 404
    authorised = create(client, session, 10, HTTP_AUTHORIZATION=f"Bearer {session.token}")
    assert authorised.status_code == 201
    assert paths.staging_dir(session.directory).exists()


def test_the_purge_command_removes_expired_uploads(client, session):
    import io

    from django.core.management import call_command

    create(client, session, 100, "stale.bin")
    ResumableUpload.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    out = io.StringIO()
    call_command("purge_sessions", "--older-than", "30d", stdout=out)
    assert "1 expired resumable upload(s) purged" in out.getvalue()
    assert not ResumableUpload.objects.exists()
