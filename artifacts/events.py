"""
Appending artifact events and announcing them.

A session's events are numbered by `EventStream.last_sequence`, which is only
written while the session's row is locked, inside the transaction that
records the change. Writers therefore take turns per session: each commits
its sequence before the next writer can take one, so a reader that sees
sequence n also sees every sequence below it, and a rolled-back change
leaves no gap. (A global auto-increment id does not have this property: a
lower id can commit after a higher one is already visible.)

Waiters learn about new events from a small channel-layer message sent after
commit. The message is only a hint to re-read the database; see
`artifacts.wakeups`. A request served by the ASGI server hands it to the
server's event loop and is answered without waiting for the layer (a Redis
round trip); there, one message per session is in flight at a time, and the
ones that come meanwhile are merged into the next.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Sequence
from functools import cache
from pathlib import PurePosixPath
from typing import Any

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, transaction

from attachments import statements
from attachments.models import Attachment, Session

from .conf import conf
from .groups import events_group
from .models import ArtifactEvent, EventStream

logger = logging.getLogger(__name__)

# The channel-layer message type; the payload stays small and JSON-safe.
NOTIFICATION_TYPE = "artifact.events"


def extension_of(name: str) -> str:
    """The lower-case extension of a file name, without the dot ("" if none)."""
    suffix = PurePosixPath(name.replace("\\", "/")).suffix
    return suffix[1:].lower()[:32]


def append_event(attachment: Attachment, change_type: str) -> ArtifactEvent:
    """
    Append an event describing `attachment` as it is now, in the caller's
    transaction (or a new one), and announce it once that transaction commits.
    """
    with transaction.atomic(savepoint=False):
        # Lock order is always the session row first: uploads and purges
        # hold it already, and taking it here too avoids deadlocks with them.
        public_id = (
            Session.objects.select_for_update()
            .values_list("session_id", flat=True)
            .get(pk=attachment.session_id)
        )
        stream = _allocate_sequences({attachment.session_id: 1})[attachment.session_id]
        event = _event_for(attachment, stream.last_sequence, change_type)
        event.save(force_insert=True)
        _apply_retention(stream)
    _announce_on_commit(public_id, event.sequence)
    return event


def append_created_events(batches: Sequence[tuple[Session, Sequence[Attachment]]]) -> None:
    """
    Append a `created` event for each of the attachments of each batch (new
    rows of that session, recorded together), in the caller's transaction,
    which must hold the sessions' row locks: one sequence allocation and one
    INSERT for all the batches, whichever sessions they are of. Each
    session's last event is announced once that transaction commits.
    """
    batches = [(session, attachments) for session, attachments in batches if attachments]
    if not batches:
        return
    with transaction.atomic(savepoint=False):
        streams = _allocate_sequences({session.pk: len(rows) for session, rows in batches})
        events = []
        for session, attachments in batches:
            first = streams[session.pk].last_sequence - len(attachments) + 1
            events += [
                _event_for(attachment, first + offset, ArtifactEvent.ChangeType.CREATED)
                for offset, attachment in enumerate(attachments)
            ]
        if statements.raw_statements():
            # One INSERT written once per vendor; bulk_create compiled it per upload.
            statements.insert(events)
        else:
            ArtifactEvent.objects.bulk_create(events)
        for stream in streams.values():
            _apply_retention(stream)
    for session, _attachments in batches:
        _announce_on_commit(session.session_id, streams[session.pk].last_sequence)


def _allocate_sequences(counts: dict[int, int]) -> dict[int, EventStream]:
    """
    Move each session's counter on by its count (session pk: count), in the
    caller's transaction (which holds the sessions' row locks), and return
    them as they now stand. On SQLite and PostgreSQL this is one UPDATE ...
    RETURNING for all of them, where reading each counter and writing it
    back took two statements per session.
    """
    if not statements.raw_statements():
        streams = {}
        for session_pk, count in counts.items():
            stream, _created = EventStream.objects.get_or_create(session_id=session_pk)
            stream.last_sequence += count
            stream.save(update_fields=["last_sequence"])
            streams[session_pk] = stream
        return streams
    params: list[int] = []
    for session_pk, count in counts.items():
        params += [session_pk, count]
    params += counts
    with connection.cursor() as cursor:
        cursor.execute(_allocation_statement(connection.vendor, len(counts)), params)
        streams = {
            key: EventStream(session_id=key, last_sequence=last, trimmed_through=trimmed)
            for key, last, trimmed in cursor.fetchall()
        }
    for session_pk, count in counts.items():
        if session_pk not in streams:
            # The session's first event: nobody else can be creating its
            # counter, since they would need the session's row lock too.
            streams[session_pk] = EventStream.objects.create(
                session_id=session_pk, last_sequence=count
            )
    return streams


@cache
def _allocation_statement(vendor: str, sessions: int) -> str:
    """`_allocate_sequences`' UPDATE for that many sessions, written once per vendor and size."""
    table, last, trimmed, key = statements.quoted_names(
        EventStream, "last_sequence", "trimmed_through", "session"
    )
    counts = " ".join(["WHEN %s THEN %s"] * sessions)
    keys = ", ".join(["%s"] * sessions)
    return (
        f"UPDATE {table} SET {last} = {last} + CASE {key} {counts} END "
        f"WHERE {key} IN ({keys}) RETURNING {key}, {last}, {trimmed}"
    )


def _event_for(attachment: Attachment, sequence: int, change_type: str) -> ArtifactEvent:
    """The (unsaved) event describing `attachment` as it is now, at `sequence`."""
    return ArtifactEvent(
        session_id=attachment.session_id,
        sequence=sequence,
        change_type=change_type,
        attachment_id=attachment.attachment_id,
        node_id=attachment.node_id or "",
        path=attachment.path,
        name=attachment.name,
        ext=extension_of(attachment.name),
        size=attachment.size,
        mime=attachment.mime,
        kind=attachment.kind,
        sha256=attachment.sha256,
    )


def _announce_on_commit(session_id: str, sequence: int) -> None:
    # A plain function, not a partial: Django's on_commit logs a failing
    # callback by its __qualname__.
    def announce_events() -> None:
        announce(session_id, sequence)

    transaction.on_commit(announce_events)


def _apply_retention(stream: EventStream) -> None:
    keep = conf.EVENT_RETENTION
    if keep is None or stream.last_sequence - stream.trimmed_through <= keep:
        return
    floor = stream.last_sequence - keep
    ArtifactEvent.objects.filter(session_id=stream.session_id, sequence__lte=floor).delete()
    stream.trimmed_through = floor
    EventStream.objects.filter(pk=stream.session_id).update(trimmed_through=floor)


def forget_session(session: Session) -> None:
    """Drop a purged session's events, and tell its waiters so they answer 404."""
    ArtifactEvent.objects.filter(session=session).delete()
    session_id = session.session_id

    def announce_purge() -> None:
        announce(session_id, 0, purged=True)

    transaction.on_commit(announce_purge)


def announce(session_id: str, sequence: int, purged: bool = False) -> None:
    """
    Tell every process waiting on this session that it has events up to
    `sequence`. Best effort, and never raises: it runs after the commit, and
    a follower that misses it finds the events at its next database re-check
    (`ARTIFACTS_EVENT_RECHECK_SECONDS`).

    On a thread of the ASGI server (a request's), the message is handed to
    the server's event loop and this returns at once: the request's answer
    does not wait for the layer. Elsewhere (a management command, a worker
    with no server) it is sent before this returns.
    """
    message: dict[str, Any] = {
        "type": NOTIFICATION_TYPE,
        "session_id": session_id,
        "sequence": sequence,
    }
    if purged:
        message["purged"] = True
    loop = _serving_loop()
    if loop is not None:
        try:
            loop.call_soon_threadsafe(_announce_on_loop, session_id, message)
            return
        except RuntimeError:
            pass  # The loop closed since it was looked at: send it from here.
    async_to_sync(_send)(session_id, message)


def _serving_loop() -> asyncio.AbstractEventLoop | None:
    """
    The running event loop of the server whose request this thread is
    serving, if any. asgiref records it on the threads it runs sync code
    on; a thread that outlived its loop (or was forked) keeps a stale one.
    """
    local = SyncToAsync.threadlocal
    loop: asyncio.AbstractEventLoop | None = getattr(local, "main_event_loop", None)
    if loop is None or getattr(local, "main_event_loop_pid", None) != os.getpid():
        return None
    if loop.is_closed() or not loop.is_running():
        return None
    return loop


async def _send(session_id: str, message: dict[str, Any]) -> None:
    """
    Send one announcement to the session's group. A connection the layer
    dropped (a Redis restart) is retried once, on a fresh connection.
    """
    for attempt in (1, 2):
        try:
            layer = get_channel_layer()
            if layer is None:
                return
            await layer.group_send(events_group(session_id), message)
            return
        except Exception:  # noqa: BLE001 (best effort: logged, never raised)
            if attempt == 2:
                logger.warning(
                    "Could not announce events of session %s up to %d; followers will "
                    "find them at their next re-check",
                    session_id,
                    message["sequence"],
                    exc_info=True,
                )


class _Announcer:
    """
    The announcements of one event loop, used only on that loop's thread.
    A session has at most one send in flight: what comes meanwhile waits,
    merged into one message, so a burst of uploads into one session costs
    the layer two sends, not one per upload, and no send overtakes another.
    """

    def __init__(self) -> None:
        # Sessions with a send in flight, and the message to send next (or None).
        self._next: dict[str, dict[str, Any] | None] = {}
        # Strong references: the loop keeps only weak ones to its tasks.
        self._tasks: set[asyncio.Task[None]] = set()

    def announce(self, session_id: str, message: dict[str, Any]) -> None:
        if session_id in self._next:
            waiting = self._next[session_id]
            self._next[session_id] = message if waiting is None else _merged(waiting, message)
            return
        self._next[session_id] = None
        task = asyncio.get_running_loop().create_task(self._send_all(session_id, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_all(self, session_id: str, message: dict[str, Any]) -> None:
        try:
            while True:
                await _send(session_id, message)
                waiting = self._next[session_id]
                if waiting is None:
                    return
                message, self._next[session_id] = waiting, None
        finally:
            del self._next[session_id]


def _merged(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """One message saying what two say: the higher sequence, and purged if either was."""
    merged = {**later, "sequence": max(earlier["sequence"], later["sequence"])}
    if earlier.get("purged"):
        merged["purged"] = True
    return merged


_announcers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Announcer] = (
    weakref.WeakKeyDictionary()
)


def _announce_on_loop(session_id: str, message: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    announcer = _announcers.get(loop)
    if announcer is None:
        announcer = _announcers[loop] = _Announcer()
    announcer.announce(session_id, message)
