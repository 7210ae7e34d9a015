"""
Recording received files: the commit protocol, and group commit.

A batch of files for one session is recorded under the session's manifest
lock (`flock`, held across processes) in these steps:

1. each file's staging directory is renamed to `attachments/<id>/`;
2. the new manifest is written to a temporary file and fsync'd, while the
   files' fsyncs run on other threads. This is the step that needs disk
   space, so a full disk fails here, with nothing recorded. It is done
   before the transaction, so the database's writer lock (SQLite has one)
   is held only for the statements and the COMMIT; a batch that a quota
   cuts short rewrites it inside the transaction;
3. one database transaction locks the session's row (a purge cannot slip
   in), checks the quotas against the session's counters and moves them
   (with no quota set, moving them is what takes the lock), inserts the
   batch's rows in one statement (`attachments_recorded` lets the
   `artifacts` app append their events, numbered by one allocation, in the
   same transaction). **Its COMMIT is the commit point.**
4. the temporary manifest is renamed over the old one and the directory is
   fsync'd, which also makes the renames of step 1 durable;
5. every request in the batch is answered.

Before the commit point any failure undoes everything: the files and the
temporary manifest are removed and each request gets the error. After it,
nothing is undone: should step 4 fail, the manifest is repaired from the rows
(`attachments.reconcile`), at once if it can be and at the next start if not.
A crash leaves files without rows (before the commit point) or rows without
manifest entries (after it); reconciliation removes the first and completes
the second.

Group commit: requests that arrive while a batch is being committed queue
up, and the next batch takes all of them, one manifest rewrite, one
transaction and one round of fsyncs for the lot. No request polls: a waiter
blocks on a condition variable (in this process) or in `flock` (across
processes), and each is answered as soon as its own batch is durable.

On SQLite, which writes one transaction at a time, batches of different
sessions also share step 3 (`_SharedTransactions`): those that wait for the
writer while another session's transaction runs are committed by the next
one together, one BEGIN and one COMMIT (one WAL fsync) for all of them. Each
session's batch keeps its own manifest lock, prepares its manifest before
and installs it after, as above. In the shared transaction the batches with
no quota to check run each statement once for all of them (one UPDATE of
the counters, one INSERT of the rows, one sequence allocation and one INSERT
of the events, `_record_batches()`), in one savepoint; a purged session is
found by that UPDATE and refused alone. Should anything else in it fail, and
for batches with a quota to check, each batch runs its statements in a
savepoint of its own, so a quota cuts only its batch short and a failed
statement rolls back only its batch, and the others commit. The COMMIT is
the commit point of every batch in it: should it fail, all of them fail as
a failed transaction of their own would. Their `on_commit` work (the events'
announcements) runs afterwards on a request's thread (each batch's own, or
one for those whose statements were shared), outside the writer's turn. On
PostgreSQL batches of different sessions commit side by side (row locks),
each in its own transaction.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import shutil
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import DatabaseError, connection, transaction
from django.db.models import F

from . import statements
from .conf import conf
from .exceptions import SessionNotFound, classify_server_error
from .manifest import AttachmentEntry, Manifest, PreparedManifest
from .manifest_sync import manifest_for, mirror_fields, sync_locked
from .models import Attachment, Session
from .quotas import QuotaExceeded, Usage, quota_error
from .receiving import ReceivedFile
from .signals import attachments_recorded

logger = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class PendingFile:
    """One received file waiting for its batch, and, once done, its outcome."""

    received: ReceivedFile
    entry: AttachmentEntry
    done: bool = False
    attachment: Attachment | None = None
    error: BaseException | None = None

    def succeed(self, attachment: Attachment) -> None:
        self.attachment, self.done = attachment, True
        self.received.claimed = True
        self.received.release()

    def fail(self, error: BaseException) -> None:
        self.error, self.done = error, True
        self.received.discard()

    def outcome(self) -> Attachment:
        if self.error is not None:
            raise self.error
        assert self.attachment is not None
        return self.attachment


class _SessionQueue:
    """The files of one session waiting to be committed by this process."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.pending: list[PendingFile] = []
        self.committing = False


# fsync of received files, several at once (a batch's files, and the
# manifest's fsync on the committing thread meanwhile).
_syncers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="upload-fsync")
# SQLite lets one transaction write at a time, and makes the others wait by
# sleeping and retrying (its busy handler, in steps of up to 100 ms): batches
# of different sessions convoyed behind each other. In this process they
# wait for the shared transaction (`_SharedTransactions`), which holds this
# lock while it runs, as does a batch recorded in its caller's transaction.
# (Other processes, and other writers, still meet the busy handler.)
_sqlite_writer = threading.RLock()

T = TypeVar("T")


def _in_transaction(record: Callable[[], T], together: _Batch | None = None) -> T:
    """
    Run `record` (step 3 of one session's batch) in a transaction and return
    what it returned once that transaction has committed. On SQLite, batches
    of other sessions waiting meanwhile share it (`_SharedTransactions`);
    `together`, the batch `record` would record, when it needs no quota
    check, lets its statements run with theirs (`_record_batches()`).
    """
    if connection.vendor != "sqlite":
        # Row locks: batches of different sessions commit side by side.
        with transaction.atomic():
            return record()
    if connection.in_atomic_block:
        # The caller's transaction: the batch can only go into that one.
        with _sqlite_writer, transaction.atomic():
            return record()
    return _shared_transactions.run(record, together)


# A session and the files of its batch that its transaction records.
_Batch = tuple[Session, list[PendingFile]]


@dataclasses.dataclass(eq=False)
class _Part:
    """One session's step 3 in a shared transaction, and, once done, its outcome."""

    record: Callable[[], Any]
    # What `record` would do, as data, when it is only the no-quota case
    # that other parts' statements can share (`_record_batches()`).
    together: _Batch | None = None
    recorded: bool = False  # its statements ran, into `value` or `error`
    done: bool = False
    value: Any = None
    error: BaseException | None = None
    # What `record` left for after the COMMIT (`transaction.on_commit`: its
    # events' announcements), run by the thread whose part it is.
    after_commit: list[tuple[Any, Callable[[], None], bool]] = dataclasses.field(
        default_factory=list
    )


class _SharedTransactions:
    """
    Group commit across sessions on SQLite. A batch that finds another
    session's batch in its transaction waits; the next transaction takes
    every batch that waited, one BEGIN and one COMMIT (one WAL fsync) for all
    of them, with each batch's statements in a savepoint of its own: a batch
    whose statements fail (a purged session, an error) is rolled back alone
    and the others commit. The thread that finds no transaction running runs
    the next one, on its own connection, and its waiters are answered when it
    has committed, each then running its own `on_commit` work.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._waiting: list[_Part] = []
        self._running = False

    def run(self, record: Callable[[], T], together: _Batch | None = None) -> T:
        part = _Part(record, together)
        with self._condition:
            self._waiting.append(part)
            while self._running and not part.done:
                self._condition.wait()
            leading = not part.done
            if leading:
                self._running = True
                parts, self._waiting = self._waiting, []
        if leading:
            try:
                self._commit(parts)
            finally:
                with self._condition:
                    self._running = False
                    self._condition.notify_all()
        if part.error is not None:
            raise part.error
        _run_after_commit(part.after_commit)
        return part.value

    @staticmethod
    def _commit(parts: list[_Part]) -> None:
        try:
            with _sqlite_writer, transaction.atomic():
                _record_together(parts)
                for part in parts:
                    if part.recorded:
                        continue
                    hooks = len(connection.run_on_commit)
                    try:
                        with transaction.atomic():
                            part.value = part.record()
                    except Exception as exc:  # noqa: BLE001 (that part's outcome; the rest go on)
                        part.error = exc
                    # A rolled-back savepoint dropped its part's hooks already.
                    part.after_commit = connection.run_on_commit[hooks:]
                    del connection.run_on_commit[hooks:]
                    _check_rolled_back()
        except BaseException as exc:
            # Nothing committed: every part fails, those that had succeeded too.
            for part in parts:
                if part.error is None:
                    part.error, part.after_commit = exc, []
            if not isinstance(exc, Exception):
                raise
        finally:
            for part in parts:
                part.done = True


def _record_together(parts: list[_Part]) -> None:
    """
    The statements of the parts that need no quota check, in one savepoint:
    each kind once for all their sessions (`_record_batches()`), where run
    part by part they cost six per session. Under many sessions the writer's
    turn was spent mostly waiting to run again (for the GIL and a core)
    after each statement, the other sessions' requests having run meanwhile.

    Should anything in it fail, the savepoint is rolled back and the parts are
    left to be recorded one by one, each then failing or committing on its own.
    The events' announcements of the parts recorded here are run after the
    COMMIT by one of their requests' threads.
    """
    together: list[_Part] = []
    sessions: set[int] = set()
    for part in parts:
        if part.together is not None and part.together[0].pk not in sessions:
            sessions.add(part.together[0].pk)
            together.append(part)
    if len(together) < 2:
        return
    hooks = len(connection.run_on_commit)
    try:
        with transaction.atomic():
            outcomes = _record_batches([part.together for part in together if part.together])
    except Exception:  # noqa: BLE001 (the parts are recorded one by one instead)
        logger.info(
            "Statements shared by %d sessions failed; recording them one by one",
            len(together),
            exc_info=True,
        )
        _check_rolled_back()
        return
    after_commit = connection.run_on_commit[hooks:]
    del connection.run_on_commit[hooks:]
    for part, outcome in zip(together, outcomes, strict=True):
        part.recorded = True
        if isinstance(outcome, BaseException):
            part.error = outcome
        else:
            part.value = outcome
            part.after_commit, after_commit = after_commit, []


def _check_rolled_back() -> None:
    if connection.needs_rollback:
        # A savepoint's rollback failed: the whole transaction goes, and
        # atomic() would roll it back without a word.
        raise DatabaseError("A shared transaction could not be rolled back in part")


def _run_after_commit(hooks: list[tuple[Any, Callable[[], None], bool]]) -> None:
    """Run a part's `on_commit` callbacks, as Django would have after its COMMIT."""
    for _savepoints, callback, _robust in hooks:
        try:
            callback()
        except Exception:  # noqa: BLE001 (past the commit point nothing is undone)
            logger.exception("Error calling %s after a shared commit", callback.__qualname__)


_shared_transactions = _SharedTransactions()


_queues: weakref.WeakValueDictionary[int, _SessionQueue] = weakref.WeakValueDictionary()
_queues_mutex = threading.Lock()


def _queue_for(session: Session) -> _SessionQueue:
    with _queues_mutex:
        queue = _queues.get(session.pk)
        if queue is None:
            queue = _queues[session.pk] = _SessionQueue()
        return queue


def commit_upload(session: Session, received: ReceivedFile, entry: AttachmentEntry) -> Attachment:
    """
    Record a received file: return its row once its manifest entry, row and
    event are durable, or raise the error that kept it out (the file is then
    gone). Concurrent calls for one session are committed together.
    """
    queue = _queue_for(session)
    item = PendingFile(received, entry)
    with queue.condition:
        queue.pending.append(item)
        while queue.committing and not item.done:
            queue.condition.wait()
        if item.done:
            return item.outcome()
        # Nobody is committing: this request commits everything queued so far.
        queue.committing = True
        batch, queue.pending = queue.pending, []
    try:
        commit_batch(session, batch)
    finally:
        with queue.condition:
            queue.committing = False
            queue.condition.notify_all()
    return item.outcome()


def commit_batch(session: Session, batch: list[PendingFile]) -> None:
    """Run the commit protocol for `batch`; every item ends done, with its row or its error."""
    try:
        _commit_with_retry(session, batch)
    except BaseException as exc:
        error = classify_server_error(exc) or exc
        for item in batch:
            if not item.done:
                item.fail(error)
        if not isinstance(exc, Exception):
            raise


def _commit_with_retry(session: Session, batch: list[PendingFile]) -> None:
    try:
        _commit_locked(session, batch)
    except _SyncFailed as exc:
        for item, error in exc.errors.items():
            item.fail(classify_server_error(error) or error)
        _commit_locked(session, [item for item in batch if not item.done])
    except DatabaseError:
        # A connection the database dropped (restart, terminated backend)
        # fails once; a fresh one usually works. Inside an outer transaction
        # there is nothing to retry with.
        if connection.in_atomic_block:
            raise
        logger.warning("Retrying a commit after a database error", exc_info=True)
        connection.close()
        remaining = [item for item in batch if not item.done]
        # The error may have come after the COMMIT took effect (a backend
        # terminated while answering it): those rows stand, and their files
        # and entries are finished rather than recorded twice.
        committed = {
            row.attachment_id: row
            for row in Attachment.objects.filter(
                attachment_id__in=[item.entry.attachment_id for item in remaining]
            )
        }
        if committed:
            _finish_committed(
                session, [i for i in remaining if i.entry.attachment_id in committed], committed
            )
        _commit_locked(session, [item for item in remaining if not item.done])


def _finish_committed(
    session: Session, items: list[PendingFile], rows: dict[str, Attachment]
) -> None:
    """Publish the files and manifest entries of rows a failed-looking COMMIT did record."""
    manifest = manifest_for(session)
    with manifest.lock():
        document = manifest.read()
        listed = {entry.attachment_id for entry in document.attachments}
        for item in items:
            item.received.publish()
            item.received.sync()
            if item.entry.attachment_id not in listed:
                document.append(item.entry)
        manifest.save(document)
    for item in items:
        item.succeed(rows[item.entry.attachment_id])


def _commit_locked(session: Session, batch: list[PendingFile]) -> None:
    if not batch:
        return
    manifest = manifest_for(session)
    try:
        with manifest.lock():
            _commit_under_lock(session, manifest, batch)
    except SessionNotFound:
        # Purged while the files arrived: the purge removed the directory,
        # and taking the lock made part of it again. (The transaction, which
        # locks the session's row, is what finds out; checking beforehand
        # cost every upload a query and still left this window open.)
        shutil.rmtree(session.directory, ignore_errors=True)
        raise


def _commit_under_lock(session: Session, manifest: Manifest, batch: list[PendingFile]) -> None:
    document = manifest.read()
    published: list[PendingFile] = []
    prepared: PreparedManifest | None = None
    accepted: list[PendingFile] = []
    rows: dict[PendingFile, Attachment] = {}
    try:
        for item in batch:
            try:
                item.received.publish()
            except FileNotFoundError:
                if not Session.objects.live().filter(pk=session.pk).exists():
                    raise SessionNotFound() from None
                raise
            published.append(item)
        # The files' fsyncs run beside the manifest's.
        syncs = {item: _syncers.submit(item.received.sync) for item in batch}
        for item in batch:
            document.append(item.entry)
        try:
            prepared = manifest.prepare(document)
        finally:
            unsynced = {
                item: error
                for item, done in syncs.items()
                if (error := done.exception()) is not None
            }
        if unsynced:
            raise _SyncFailed(unsynced)

        def record() -> tuple[list[PendingFile], dict[PendingFile, Attachment]]:
            # Step 3; on SQLite possibly run by another request's thread, in
            # a transaction shared with other sessions' batches.
            nonlocal prepared
            accepted = _admit_batch(session, batch)
            if len(accepted) < len(batch):
                # Refused by a quota: the manifest is written again without them.
                assert prepared is not None
                manifest.discard(prepared)
                prepared = None
                refused = {item.entry.attachment_id for item in batch} - {
                    item.entry.attachment_id for item in accepted
                }
                document.attachments = [
                    entry for entry in document.attachments if entry.attachment_id not in refused
                ]
                if accepted:
                    prepared = manifest.prepare(document)
            return accepted, _insert_rows([(session, accepted)])[0] if accepted else {}

        quotas = conf.SESSION_MAX_FILES is not None or conf.SESSION_MAX_BYTES is not None
        accepted, rows = _in_transaction(record, None if quotas else (session, batch))
    except BaseException:
        if prepared is not None:
            manifest.discard(prepared)
        # Back to staging, not removed: a retry (after a dropped database
        # connection) records them from there, and a failure removes them.
        for item in published:
            if not item.done:
                item.received.unpublish()
        raise
    # The commit point has passed: from here on nothing is undone.
    if prepared is not None:
        try:
            manifest.install(prepared)
        except OSError:
            logger.exception(
                "Recorded %d upload(s), but the manifest could not be replaced", len(accepted)
            )
            _repair_manifest(session, manifest)
    for item in accepted:
        item.succeed(rows[item])


class _SyncFailed(Exception):
    """Some files of a batch could not be made durable; the rest is committed again without them."""

    def __init__(self, errors: dict[PendingFile, BaseException]) -> None:
        super().__init__(f"{len(errors)} file(s) could not be fsync'd")
        self.errors = errors


def _repair_manifest(session: Session, manifest: Manifest) -> None:
    """Write the committed rows' entries back, under the lock the caller holds."""
    try:
        sync_locked(session, manifest, manifest.read())
    except Exception:  # noqa: BLE001 (reconciliation at the next start finishes it)
        logger.exception("Manifest of session %s left for reconciliation", session.session_id)


def _admit_batch(session: Session, batch: list[PendingFile]) -> list[PendingFile]:
    """
    The first half of step 3: lock the session's row, take what its quotas
    allow and move its counters by what was taken. Items refused by a quota
    are marked done with their error (the rest of the batch goes on); a dead
    session fails all. Call it in the transaction that `_insert_rows()` then
    completes.
    """
    if conf.SESSION_MAX_FILES is None and conf.SESSION_MAX_BYTES is None:
        # No quota to check, so nothing to read first: moving the counters
        # is what locks the row, and what finds a purged session.
        if not _count_in(session, batch, live_only=True):
            raise SessionNotFound()
        return list(batch)
    used = _locked_usage(session)
    if used is None:
        raise SessionNotFound()
    accepted: list[PendingFile] = []
    added_bytes = 0
    for item in batch:
        refusal = _quota_refusal(used, len(accepted), added_bytes, item.entry.size)
        if refusal is not None:
            item.fail(refusal)
            continue
        accepted.append(item)
        added_bytes += item.entry.size
    if accepted:
        _count_in(session, accepted)
    return accepted


def _locked_usage(session: Session) -> Usage | None:
    """Lock the session's row and read its counters; None if it is purged or gone."""
    if not statements.raw_statements():
        row = (
            Session.objects.live()
            .select_for_update()
            .filter(pk=session.pk)
            .values("used_files", "used_bytes")
            .first()
        )
        return None if row is None else Usage(files=row["used_files"], bytes=row["used_bytes"])
    with connection.cursor() as cursor:
        cursor.execute(_usage_statement(connection.vendor), [session.pk])
        found = cursor.fetchone()
    return None if found is None else Usage(files=found[0], bytes=found[1])


def _counter_columns() -> tuple[str, ...]:
    """The session table and its pk, usage counters and purge columns, quoted."""
    return statements.quoted_names(Session, "pk", "used_files", "used_bytes", "purged_at")


@functools.cache
def _usage_statement(vendor: str) -> str:
    table, pk, files, size, purged_at = _counter_columns()
    sql = f"SELECT {files}, {size} FROM {table} WHERE {pk} = %s AND {purged_at} IS NULL"
    # As select_for_update() does: SQLite has no row locks (its writer lock,
    # taken by the transaction, serialises the batches).
    if connection.features.has_select_for_update:
        sql = f"{sql} {connection.ops.for_update_sql()}"
    return sql


def _count_in(session: Session, items: list[PendingFile], live_only: bool = False) -> bool:
    """Add `items` to the session's usage counters; False if it matched no (live) session."""
    return session.pk in _count_in_sessions([(session, items)], live_only)


def _count_in_sessions(batches: list[_Batch], live_only: bool = False) -> set[int]:
    """Add each batch to its session's usage counters; the pks of the (live) sessions moved."""
    moves = [
        (session.pk, len(items), sum(item.entry.size for item in items))
        for session, items in batches
    ]
    if not statements.raw_statements():
        sessions = Session.objects.live() if live_only else Session.objects.all()
        return {
            pk
            for pk, files, size in moves
            if sessions.filter(pk=pk).update(
                used_files=F("used_files") + files, used_bytes=F("used_bytes") + size
            )
        }
    params: list[int] = []
    for column in (1, 2):
        for move in moves:
            params += [move[0], move[column]]
    params += [pk for pk, _files, _size in moves]
    with connection.cursor() as cursor:
        cursor.execute(_count_statement(connection.vendor, live_only, len(moves)), params)
        return {pk for (pk,) in cursor.fetchall()}


# Written once per database vendor and number of sessions, as the rows' and
# events' INSERTs are (attachments.statements): the ORM built it for every batch.
@functools.cache
def _count_statement(vendor: str, live_only: bool, sessions: int) -> str:
    table, pk, files, size, purged_at = _counter_columns()
    by_session = " ".join(["WHEN %s THEN %s"] * sessions)
    keys = ", ".join(["%s"] * sessions)
    sql = (
        f"UPDATE {table} SET {files} = {files} + CASE {pk} {by_session} END, "
        f"{size} = {size} + CASE {pk} {by_session} END WHERE {pk} IN ({keys})"
    )
    if live_only:
        sql = f"{sql} AND {purged_at} IS NULL"
    return f"{sql} RETURNING {pk}"


def _record_batches(
    batches: list[_Batch],
) -> list[tuple[list[PendingFile], dict[PendingFile, Attachment]] | SessionNotFound]:
    """
    Step 3 of batches of different sessions with no quota to check, in the
    caller's transaction: their counters moved by one UPDATE (which finds the
    purged sessions), their rows inserted by one INSERT, their events by the
    receivers of one `attachments_recorded`. Each batch's outcome, in order:
    what its `record` returns, or SessionNotFound.
    """
    live = _count_in_sessions(batches, live_only=True)
    recorded = [(session, items) for session, items in batches if session.pk in live]
    rows = iter(_insert_rows(recorded))
    return [
        (items, next(rows)) if session.pk in live else SessionNotFound()
        for session, items in batches
    ]


def _insert_rows(batches: list[_Batch]) -> list[dict[PendingFile, Attachment]]:
    """
    The rest of step 3: the batches' rows in one INSERT and their events (by
    the `artifacts` app's receiver), under the row locks `_admit_batch()` or
    `_count_in_sessions()` took. Each batch's rows, by its items.
    """
    rows = [
        [
            Attachment(
                session=session, attachment_id=item.entry.attachment_id, **mirror_fields(item.entry)
            )
            for item in items
        ]
        for session, items in batches
    ]
    every_row = [row for session_rows in rows for row in session_rows]
    if statements.raw_statements():
        statements.insert(every_row)
    else:
        Attachment.objects.bulk_create(every_row)
    attachments_recorded.send(
        sender=Attachment,
        batches=[
            (session, session_rows)
            for (session, _items), session_rows in zip(batches, rows, strict=True)
        ],
    )
    return [
        dict(zip(items, session_rows, strict=True))
        for (_session, items), session_rows in zip(batches, rows, strict=True)
    ]


def _quota_refusal(used: Usage, files: int, size_so_far: int, size: int) -> QuotaExceeded | None:
    current = Usage(files=used.files + files, bytes=used.bytes + size_so_far)
    max_files, max_bytes = conf.SESSION_MAX_FILES, conf.SESSION_MAX_BYTES
    if max_files is not None and current.files + 1 > max_files:
        return quota_error(current, "The session already holds as many files as its quota allows.")
    if max_bytes is not None and current.bytes + size > max_bytes:
        return quota_error(
            current, "The upload would exceed the session's quota of bytes; nothing was kept."
        )
    return None
