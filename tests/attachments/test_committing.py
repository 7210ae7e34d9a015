"""
The upload's commit protocol and group commit (attachments.committing):
concurrent writers lose nothing, a refusal before the commit point leaves
nothing, and what is recorded is the same in the manifest, the rows, the
events and on disk.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading

import pytest
from django.utils import timezone

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


def on_threads(calls: list) -> list[object]:
    """Run each call on a thread of its own; what each returned or raised, in order."""
    from django.db import connection

    outcomes: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            outcomes[index] = calls[index]()
        except BaseException as exc:  # noqa: BLE001 (the outcome under test)
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def test_many_threads_into_one_session_lose_nothing():
    session = new_session()
    threads, per_thread = 12, 8
    results: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def writer(index: int) -> None:
        start.wait()
        for n in range(per_thread):
            content = f"{index}-{n}-".encode() + os.urandom(64)
            attachment = accept_upload(session, receive(session, f"f{index}-{n}.bin", content))
            with lock:
                results.append(attachment.attachment_id)

    assert on_threads([functools.partial(writer, i) for i in range(threads)]) == [None] * threads
    assert len(results) == len(set(results)) == threads * per_thread
    assert set(assert_consistent(session)) == set(results)


def test_concurrent_uploads_over_a_quota_keep_exactly_what_fits(settings):
    settings.ATTACHMENTS_SESSION_MAX_FILES = 5
    session = new_session()
    received = [receive(session, f"f{i}.bin", b"x") for i in range(9)]
    outcomes = on_threads([functools.partial(accept_upload, session, r) for r in received])
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

    def on_recorded(sender, batches, **kwargs):
        recorded.extend([a.attachment_id for a in attachments] for _session, attachments in batches)

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


# Group commit across sessions (SQLite's shared transaction).


@pytest.fixture
def shared_commits(monkeypatch):
    """
    Run calls into different sessions so that each reaches SQLite's writer
    while another session's transaction holds it: the calls' batches then
    wait together. Returns a runner that returns the calls' outcomes and how
    many COMMITs recorded them.
    """
    from django.db import connection, connections

    from attachments import committing

    if connection.vendor != "sqlite":
        pytest.skip("transactions are shared across sessions on SQLite only")
    commits: list[int] = []
    wrapper = type(connections["default"])
    plain_commit = wrapper.commit

    def counted_commit(self):
        commits.append(threading.get_ident())
        return plain_commit(self)

    # The batch that runs the first transaction says so, and each batch that
    # waits for the shared transaction after it.
    leading = threading.Event()
    waiting = threading.Semaphore(0)

    class Observed(threading.Condition):
        def wait(self, timeout=None):
            waiting.release()
            return super().wait(timeout)

    shared = committing._shared_transactions
    run_transaction = type(shared)._commit

    def observed_commit(parts):
        leading.set()
        return run_transaction(parts)

    monkeypatch.setattr(shared, "_condition", Observed())
    monkeypatch.setattr(shared, "_commit", observed_commit)

    def run(calls: list) -> tuple[list[object], int]:
        monkeypatch.setattr(wrapper, "commit", counted_commit)
        first: list[list[object]] = []
        rest: list[list[object]] = []
        try:
            # Another session's transaction in progress: the first call's
            # batch runs the next transaction and waits for it, and the
            # others, started only then, queue behind that one.
            with committing._sqlite_writer:
                leader = threading.Thread(target=lambda: first.append(on_threads(calls[:1])))
                leader.start()
                assert leading.wait(30)
                others = threading.Thread(target=lambda: rest.append(on_threads(calls[1:])))
                others.start()
                for _ in calls[1:]:
                    assert waiting.acquire(timeout=30)
            leader.join(60)
            others.join(60)
        finally:
            monkeypatch.setattr(wrapper, "commit", plain_commit)
        return first[0] + rest[0], len(commits)

    return run


def test_uploads_into_many_sessions_at_once_lose_nothing():
    sessions = [new_session() for _ in range(6)]
    per_session, threads_per_session = 6, 2
    results: list[tuple[int, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(len(sessions) * threads_per_session)

    def writer(number: int, thread: int) -> None:
        session = sessions[number]
        start.wait()
        for n in range(per_session // threads_per_session):
            content = f"{number}-{thread}-{n}-".encode() + os.urandom(64)
            received = receive(session, f"s{number}-{thread}-{n}.bin", content)
            attachment = accept_upload(session, received)
            with lock:
                results.append((number, attachment.attachment_id))

    calls = [
        functools.partial(writer, number, thread)
        for number in range(len(sessions))
        for thread in range(threads_per_session)
    ]
    assert on_threads(calls) == [None] * len(calls)
    for number, session in enumerate(sessions):
        recorded = {attachment_id for owner, attachment_id in results if owner == number}
        assert len(recorded) == per_session
        assert set(assert_consistent(session)) == recorded


def test_batches_of_several_sessions_waiting_together_are_committed_by_one_commit(
    shared_commits,
):
    sessions = [new_session() for _ in range(5)]
    received = [receive(session, "f.txt", b"file of %d" % n) for n, session in enumerate(sessions)]
    calls = [
        functools.partial(accept_upload, session, item)
        for session, item in zip(sessions, received, strict=True)
    ]
    outcomes, commits = shared_commits(calls)
    assert all(isinstance(outcome, Attachment) for outcome in outcomes), outcomes
    # The first batch waited alone for the transaction in progress; the four
    # that queued behind it went in together.
    assert commits == 2
    for session, outcome in zip(sessions, outcomes, strict=True):
        assert list(assert_consistent(session)) == [outcome.attachment_id]
        assert list(ArtifactEvent.objects.filter(session=session).values_list("sequence")) == [(1,)]


def test_a_refusal_in_a_shared_transaction_fails_only_its_own_session(settings, shared_commits):
    settings.ATTACHMENTS_SESSION_MAX_FILES = 2
    first, full, cut_short, purged, failing, last = (new_session() for _ in range(6))
    accept_upload(full, receive(full, "already.txt", b"a"))
    accept_upload(full, receive(full, "already-2.txt", b"b"))
    held = accept_upload(cut_short, receive(cut_short, "held.txt", b"c"))
    full_before = manifest_entries(full)
    batch = [pending(cut_short, receive(cut_short, f"b{n}.txt", b"batch %d" % n)) for n in range(2)]
    over = receive(full, "over.txt", b"over the quota")
    late = receive(purged, "late.txt", b"too late")
    # Purged in the database while its files are still being removed: the
    # transaction is what finds out.
    Session.objects.filter(pk=purged.pk).update(purged_at=timezone.now())
    broken = receive(failing, "broken.txt", b"its event fails")

    def fail_for_one_session(sender, batches, **kwargs):
        if any(session.pk == failing.pk for session, _attachments in batches):
            raise RuntimeError("the event could not be written")

    attachments_recorded.connect(fail_for_one_session, sender=Attachment, dispatch_uid="test-one")
    try:
        outcomes, commits = shared_commits(
            [
                functools.partial(accept_upload, first, receive(first, "first.txt", b"first")),
                functools.partial(accept_upload, full, over),
                functools.partial(commit_batch, cut_short, batch),
                functools.partial(accept_upload, purged, late),
                functools.partial(accept_upload, failing, broken),
                functools.partial(accept_upload, last, receive(last, "last.txt", b"last")),
            ]
        )
    finally:
        attachments_recorded.disconnect(sender=Attachment, dispatch_uid="test-one")
    # The first batch alone, then the five others in one transaction.
    assert commits == 2
    recorded_first, refused, _batch, gone, failed, recorded_last = outcomes
    assert isinstance(refused, QuotaExceeded)
    assert isinstance(gone, SessionNotFound)
    assert isinstance(failed, RuntimeError)
    # The session over its quota keeps what it had, and the refused file is gone.
    assert assert_consistent(full) == full_before
    assert not over.path.exists()
    # The batch that a quota cut short lists what it kept, and only that.
    assert isinstance(batch[0].outcome(), Attachment)
    with pytest.raises(QuotaExceeded):
        batch[1].outcome()
    assert list(assert_consistent(cut_short)) == [held.attachment_id, batch[0].entry.attachment_id]
    # The purged session and the failed statements left nothing.
    assert not Attachment.objects.filter(session__in=[purged, failing]).exists()
    assert not ArtifactEvent.objects.filter(session=failing).exists()
    assert not broken.path.exists() and not late.path.exists()
    manifest = failing.directory / "code_workspace/attachments/attachments_manifest.json"
    assert not manifest.exists() or manifest_entries(failing) == {}
    # The others are recorded, in full, in the same transaction as the failures.
    assert list(assert_consistent(first)) == [recorded_first.attachment_id]
    assert list(assert_consistent(last)) == [recorded_last.attachment_id]


def test_sessions_sharing_a_transaction_share_its_statements(shared_commits):
    """With no quota to check, one signal (one INSERT of rows, one of events) for all of them."""
    sessions = [new_session() for _ in range(5)]
    accept_upload(sessions[2], receive(sessions[2], "earlier.txt", b"already has an event"))
    signalled: list[list[str]] = []

    def on_recorded(sender, batches, **kwargs):
        signalled.append([session.session_id for session, _attachments in batches])

    attachments_recorded.connect(on_recorded, sender=Attachment, dispatch_uid="test-together")
    try:
        outcomes, commits = shared_commits(
            [
                functools.partial(accept_upload, session, receive(session, "f.txt", b"%d" % n))
                for n, session in enumerate(sessions)
            ]
        )
    finally:
        attachments_recorded.disconnect(sender=Attachment, dispatch_uid="test-together")
    assert all(isinstance(outcome, Attachment) for outcome in outcomes), outcomes
    assert commits == 2
    # The first alone, then the four that waited behind it, together.
    assert len(signalled) == 2 and len(signalled[1]) == 4
    assert sorted(signalled[0] + signalled[1]) == sorted(s.session_id for s in sessions)
    for session, outcome in zip(sessions, outcomes, strict=True):
        assert list(assert_consistent(session))[-1] == outcome.attachment_id
        sequences = list(ArtifactEvent.objects.filter(session=session).values_list("sequence"))
        assert sequences == ([(1,), (2,)] if session == sessions[2] else [(1,)])
        assert usage(session) == counted_usage(session)


def test_shared_statements_that_fail_are_run_again_session_by_session(shared_commits):
    """A purged session and a failing receiver cost only their own uploads."""
    first, purged, failing, kept, last = (new_session() for _ in range(5))
    late = receive(purged, "late.txt", b"too late")
    Session.objects.filter(pk=purged.pk).update(purged_at=timezone.now())
    broken = receive(failing, "broken.txt", b"its event fails")
    calls = 0

    def fail_for_one_session(sender, batches, **kwargs):
        nonlocal calls
        calls += 1
        if any(session.pk == failing.pk for session, _attachments in batches):
            raise RuntimeError("the event could not be written")

    attachments_recorded.connect(fail_for_one_session, sender=Attachment, dispatch_uid="test-two")
    try:
        outcomes, commits = shared_commits(
            [
                functools.partial(accept_upload, first, receive(first, "first.txt", b"first")),
                functools.partial(accept_upload, purged, late),
                functools.partial(accept_upload, failing, broken),
                functools.partial(accept_upload, kept, receive(kept, "kept.txt", b"kept")),
                functools.partial(accept_upload, last, receive(last, "last.txt", b"last")),
            ]
        )
    finally:
        attachments_recorded.disconnect(sender=Attachment, dispatch_uid="test-two")
    assert commits == 2
    # The first alone; the four others together, which failed; then one by
    # one: the purged session stops before any signal, the three others send one each.
    assert calls == 1 + 1 + 3
    recorded_first, gone, failed, recorded_kept, recorded_last = outcomes
    assert isinstance(gone, SessionNotFound)
    assert isinstance(failed, RuntimeError)
    assert not Attachment.objects.filter(session__in=[purged, failing]).exists()
    assert not ArtifactEvent.objects.filter(session__in=[purged, failing]).exists()
    assert not broken.path.exists() and not late.path.exists()
    assert usage(failing) == counted_usage(failing)
    for session, outcome in ((first, recorded_first), (kept, recorded_kept), (last, recorded_last)):
        assert list(assert_consistent(session)) == [outcome.attachment_id]
        assert list(ArtifactEvent.objects.filter(session=session).values_list("sequence")) == [(1,)]
        assert usage(session) == counted_usage(session)
