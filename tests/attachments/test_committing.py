"""
The upload's commit protocol and group commit (attachments.committing):
concurrent writers lose nothing, a refusal before the commit point leaves
nothing, and what is recorded is the same in the manifest, the rows, the
events and on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

import pytest

from artifacts.models import ArtifactEvent
from attachments.committing import PendingFile, commit_batch
from attachments.exceptions import SessionNotFound
from attachments.manifest import AttachmentEntry
from attachments.models import Attachment, Session
from attachments.quotas import QuotaExceeded, counted_usage, usage
from attachments.receiving import UploadSink
from attachments.sessions import purge_session
from attachments.signals import attachments_recorded
from attachments.uploads import accept_upload

from .builders import new_session

pytestmark = pytest.mark.django_db(transaction=True)


def receive(session, name: str, content: bytes):
    sink = UploadSink(session.directory / "code_workspace/attachments", name)
    sink.write(content)
    return sink.finish()


def pending(session, received) -> PendingFile:
    """A received file as the upload service queues it for its batch."""
    path = (received.final_directory() / received.filename).relative_to(session.directory)
    entry = AttachmentEntry.for_new_file(
        attachment_id=received.attachment_id,
        name=received.name,
        path=path.as_posix(),
        head=received.head,
        size=received.size,
        sha256=received.sha256,
        source=Attachment.Source.USER_UPLOAD,
    )
    return PendingFile(received, entry)


def manifest_entries(session) -> dict[str, dict]:
    path = session.directory / "code_workspace/attachments/attachments_manifest.json"
    return {e["attachment_id"]: e for e in json.loads(path.read_text())["attachments"]}


def assert_consistent(session) -> dict[str, dict]:
    """Manifest = rows = created events = files on disk, entry by entry, with their sha256."""
    entries = manifest_entries(session)
    rows = {a.attachment_id: a for a in Attachment.objects.filter(session=session)}
    events = list(
        ArtifactEvent.objects.filter(session=session)
        .order_by("sequence")
        .values_list("sequence", "attachment_id", "change_type")
    )
    assert set(entries) == set(rows)
    assert sorted(a for _s, a, _c in events) == sorted(rows)
    assert [s for s, _a, _c in events] == list(range(1, len(events) + 1))
    for attachment_id, entry in entries.items():
        data = (session.directory / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] == rows[attachment_id].sha256
    staging = session.directory / "code_workspace/attachments/.staging"
    assert not staging.exists() or list(staging.iterdir()) == []
    assert usage(session) == counted_usage(session)
    return entries


def test_many_threads_into_one_session_lose_nothing():
    session = new_session()
    threads, per_thread = 12, 8
    results: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def writer(index: int) -> None:
        from django.db import connection

        try:
            start.wait()
            for n in range(per_thread):
                content = f"{index}-{n}-".encode() + os.urandom(64)
                attachment = accept_upload(session, receive(session, f"f{index}-{n}.bin", content))
                with lock:
                    results.append(attachment.attachment_id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert errors == []
    assert len(results) == len(set(results)) == threads * per_thread
    assert set(assert_consistent(session)) == set(results)


def test_concurrent_uploads_over_a_quota_keep_exactly_what_fits(settings):
    settings.ATTACHMENTS_SESSION_MAX_FILES = 5
    session = new_session()
    received = [receive(session, f"f{i}.bin", b"x") for i in range(9)]
    outcomes: list[object] = [None] * len(received)

    def record(index: int) -> None:
        from django.db import connection

        try:
            outcomes[index] = accept_upload(session, received[index])
        except QuotaExceeded as exc:
            outcomes[index] = exc
        finally:
            connection.close()

    workers = [threading.Thread(target=record, args=(i,)) for i in range(len(received))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    kept = [o for o in outcomes if isinstance(o, Attachment)]
    refused = [o for o in outcomes if isinstance(o, QuotaExceeded)]
    assert (len(kept), len(refused)) == (5, 4)
    assert set(assert_consistent(session)) == {a.attachment_id for a in kept}
    for item, outcome in zip(received, outcomes, strict=True):
        if isinstance(outcome, QuotaExceeded):
            assert not item.path.exists()


def test_a_session_purged_before_the_commit_point_keeps_nothing():
    session = new_session()
    item = receive(session, "late.txt", b"too late")
    purge_session(Session.objects.get(pk=session.pk))
    with pytest.raises(SessionNotFound):
        accept_upload(session, item)
    assert not item.path.exists()
    assert not Attachment.objects.filter(session=session).exists()


def test_usage_counters_follow_uploads_and_purges():
    from attachments.manifest_sync import purge_attachments

    session = new_session()
    accept_upload(session, receive(session, "a.bin", b"a" * 10))
    accept_upload(session, receive(session, "b.bin", b"b" * 32))
    assert (usage(session).files, usage(session).bytes) == (2, 42)
    purge_attachments(session)
    assert (usage(session).files, usage(session).bytes) == (0, 0)


@pytest.mark.services
def test_a_backend_terminated_mid_commit_is_retried_and_keeps_the_file():
    """A real terminated PostgreSQL backend, at the first insert of the batch."""
    import psycopg
    from django.db import connection

    session = new_session()
    item = receive(session, "kept.bin", b"every byte" * 100)
    terminated = []

    def terminate_once(execute, sql, params, many, context):
        if not terminated and sql.startswith('INSERT INTO "attachments_attachment"'):
            pid = connection.connection.info.backend_pid
            settings = connection.settings_dict
            with psycopg.connect(
                host=settings["HOST"] or "127.0.0.1",
                port=settings["PORT"] or 5432,
                user=settings["USER"],
                dbname=settings["NAME"],
                autocommit=True,
            ) as other:
                other.execute("SELECT pg_terminate_backend(%s)", [pid])
            terminated.append(pid)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(terminate_once):
        attachment = accept_upload(session, item)
    assert terminated
    assert (session.directory / attachment.path).read_bytes() == b"every byte" * 100
    assert set(assert_consistent(session)) == {attachment.attachment_id}


def test_a_batch_is_recorded_at_once_with_contiguous_sequences_in_its_order():
    session = new_session()
    first = accept_upload(session, receive(session, "first.txt", b"before the batch"))
    batch = [pending(session, receive(session, f"b{n}.txt", b"batch %d" % n)) for n in range(6)]
    recorded: list[list[str]] = []

    def on_recorded(sender, session, attachments, **kwargs):
        recorded.append([a.attachment_id for a in attachments])

    attachments_recorded.connect(on_recorded, sender=Attachment, dispatch_uid="test-batch")
    try:
        commit_batch(session, batch)
    finally:
        attachments_recorded.disconnect(sender=Attachment, dispatch_uid="test-batch")
    ids = [item.entry.attachment_id for item in batch]
    assert [item.outcome().attachment_id for item in batch] == ids
    assert recorded == [ids]  # one insert, one signal, for the whole batch
    events = list(
        ArtifactEvent.objects.filter(session=session)
        .order_by("sequence")
        .values_list("sequence", "attachment_id", "change_type")
    )
    assert events == [(1, first.attachment_id, "created")] + [
        (2 + n, attachment_id, "created") for n, attachment_id in enumerate(ids)
    ]
    assert list(assert_consistent(session)) == [first.attachment_id, *ids]  # manifest order


def test_a_batch_that_fails_in_its_transaction_leaves_nothing():
    """The manifest written beside the failed transaction is thrown away with it."""
    session = new_session()
    kept = accept_upload(session, receive(session, "kept.txt", b"kept"))
    manifest_before = (
        session.directory / "code_workspace/attachments/attachments_manifest.json"
    ).read_bytes()
    batch = [pending(session, receive(session, f"b{n}.txt", b"lost")) for n in range(3)]

    def fail(sender, **kwargs):
        raise RuntimeError("the event could not be written")

    attachments_recorded.connect(fail, sender=Attachment, dispatch_uid="test-fail")
    try:
        commit_batch(session, batch)
    finally:
        attachments_recorded.disconnect(sender=Attachment, dispatch_uid="test-fail")
    for item in batch:
        with pytest.raises(RuntimeError):
            item.outcome()
        assert not item.received.path.exists()
        assert not (session.directory / item.entry.path).exists()
    directory = session.directory / "code_workspace/attachments"
    assert (directory / "attachments_manifest.json").read_bytes() == manifest_before
    assert not [p for p in directory.iterdir() if p.name.startswith(".manifest-")]
    assert set(assert_consistent(session)) == {kept.attachment_id}
    assert ArtifactEvent.objects.filter(session=session).count() == 1


def test_a_batch_cut_short_by_a_quota_lists_only_what_it_kept(settings):
    settings.ATTACHMENTS_SESSION_MAX_FILES = 3
    session = new_session()
    first = accept_upload(session, receive(session, "first.txt", b"first"))
    batch = [pending(session, receive(session, f"b{n}.txt", b"batch %d" % n)) for n in range(4)]
    commit_batch(session, batch)
    kept = [item.outcome().attachment_id for item in batch[:2]]
    for item in batch[2:]:
        with pytest.raises(QuotaExceeded):
            item.outcome()
        assert not (session.directory / item.entry.path).exists()
    assert list(assert_consistent(session)) == [first.attachment_id, *kept]
    directory = session.directory / "code_workspace/attachments"
    assert not [p for p in directory.iterdir() if p.name.startswith(".manifest-")]
