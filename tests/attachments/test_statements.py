"""
The upload path's hand-written statements (attachments.statements, and the
ones attachments.access, attachments.committing and artifacts.events write
once per database vendor) against the ORM they stand in for: what they store
reads back the same, byte for byte, both ways; what they read is the
instance the ORM would build; and the guarantees of the commit protocol (a
purged session is refused, counters and quotas move as before) hold on both
paths. Each test runs on whichever database the suite is given.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from artifacts.events import append_created_events
from artifacts.models import ArtifactEvent, EventStream
from attachments import access, committing, statements
from attachments.access import Credentials, session_for
from attachments.exceptions import SessionNotFound
from attachments.models import Attachment, Session
from attachments.quotas import QuotaExceeded, counted_usage, usage
from attachments.sessions import purge_session
from attachments.uploads import accept_upload

from .builders import new_session
from .test_committing import assert_consistent, receive

pytestmark = pytest.mark.django_db(transaction=True)

WHEN = datetime.datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=datetime.UTC)


@pytest.fixture(params=["raw", "orm"])
def path(request, monkeypatch) -> str:
    """Run the test on the hand-written statements, and again on the ORM path they replace."""
    if request.param == "orm":
        monkeypatch.setattr(statements, "raw_statements", lambda: False)
    elif not statements.raw_statements():
        pytest.skip(f"{connection.vendor} has no hand-written statements")
    return request.param


def fields_of(instance: Any) -> dict[str, tuple[type, Any]]:
    """Every concrete field's value, with its type (a str is not a datetime, 1 is not 1.0)."""
    return {
        field.attname: (type(getattr(instance, field.attname)), getattr(instance, field.attname))
        for field in type(instance)._meta.concrete_fields
    }


def stored(model: type, pk: int, skip: tuple[str, ...]) -> dict[str, Any]:
    """
    A row's columns as the database holds them: each column's text (and on
    SQLite its storage class), so two rows compare equal only if they were
    stored the same way, not merely read back alike.
    """
    fields = [f for f in model._meta.concrete_fields if f.attname not in skip]
    quote = connection.ops.quote_name
    columns = []
    for field in fields:
        column = quote(field.column)
        columns.append(f"CAST({column} AS TEXT)")
        if connection.vendor == "sqlite":
            columns.append(f"typeof({column})")
    sql = (
        f"SELECT {', '.join(columns)} FROM {quote(model._meta.db_table)} "
        f"WHERE {quote(model._meta.pk.column)} = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [pk])
        row = cursor.fetchone()
    step = 2 if connection.vendor == "sqlite" else 1
    return {field.attname: row[i * step : i * step + step] for i, field in enumerate(fields)}


def attachment(session: Session, attachment_id: str) -> Attachment:
    return Attachment(
        session=session,
        attachment_id=attachment_id,
        name="Résumé «final» 日本.tar.gz",
        path=f"code_workspace/attachments/{attachment_id}/Résumé.tar.gz",
        mime="application/gzip",
        kind=Attachment.Kind.FILE,
        size=2**40 + 3,
        sha256="ab" * 32,
        source=Attachment.Source.WORKSPACE,
        node_id="node-7",
        metadata={"pages": 3, "ratio": 0.5, "tags": ["a", "ü"], "nested": {"none": None}},
        created_at=WHEN,
        updated_at=WHEN + datetime.timedelta(microseconds=1),
    )


# Reading the session


def test_the_session_read_by_hand_is_the_one_the_orm_reads(django_user_model):
    owner = django_user_model.objects.create_user("owner", password="x")
    session = new_session(owner=owner)
    Session.objects.filter(pk=session.pk).update(used_files=3, used_bytes=2**40)
    by_orm = Session.objects.live().filter(session_id=session.session_id).first()
    by_hand = access._live_session(session.session_id)
    assert by_hand is not None and by_orm is not None
    assert fields_of(by_hand) == fields_of(by_orm)
    assert by_hand.created_at.tzinfo is not None
    assert (by_hand._state.adding, by_hand._state.db) == (False, by_orm._state.db)
    assert by_hand.owner == owner


def test_a_purged_or_unknown_session_is_not_found(path):
    session = new_session()
    assert session_for(Credentials(bearer=session.token), session.session_id).pk == session.pk
    purge_session(session)
    with pytest.raises(SessionNotFound):
        session_for(Credentials(bearer=session.token), session.session_id)
    with pytest.raises(SessionNotFound):
        session_for(Credentials(bearer=session.token), "no-such-session")
    assert access._live_session(session.session_id) is None


# Writing rows and events


def test_rows_inserted_by_hand_are_stored_as_bulk_create_stores_them():
    if not statements.raw_statements():
        pytest.skip(f"{connection.vendor} has no hand-written statements")
    session = new_session()
    by_orm, by_hand = attachment(session, "att_orm"), attachment(session, "att_hand")
    with transaction.atomic():
        Attachment.objects.bulk_create([by_orm])
        statements.insert([by_hand])
    assert isinstance(by_hand.pk, int) and by_hand.pk != by_orm.pk
    assert (by_hand._state.adding, by_hand._state.db) == (False, by_orm._state.db)
    assert by_hand.session is session  # the related instance stays cached, as bulk_create keeps it
    skip = ("id", "attachment_id", "path")
    assert stored(Attachment, by_hand.pk, skip) == stored(Attachment, by_orm.pk, skip)
    read_orm, read_hand = (
        Attachment.objects.get(pk=by_orm.pk),
        Attachment.objects.get(pk=by_hand.pk),
    )
    for read in (read_orm, read_hand):
        read.attachment_id = read.path = read.id = None
    assert fields_of(read_hand) == fields_of(read_orm)
    assert read_hand.metadata == by_hand.metadata and read_hand.created_at == WHEN


def test_events_inserted_by_hand_are_stored_as_bulk_create_stores_them():
    if not statements.raw_statements():
        pytest.skip(f"{connection.vendor} has no hand-written statements")
    session = new_session()
    common = {
        "session": session,
        "change_type": ArtifactEvent.ChangeType.CREATED,
        "attachment_id": "att_x",
        "path": "code_workspace/attachments/att_x/ü.txt",
        "name": "ü.txt",
        "ext": "txt",
        "size": 12,
        "mime": "text/plain",
        "kind": "file",
        "sha256": "cd" * 32,
        "created_at": WHEN,
    }
    by_orm = ArtifactEvent(sequence=1, artifact_id="art_orm", **common)
    by_hand = ArtifactEvent(sequence=2, artifact_id="art_hand", **common)
    with transaction.atomic():
        ArtifactEvent.objects.bulk_create([by_orm])
        statements.insert([by_hand])
    skip = ("id", "sequence", "artifact_id")
    assert stored(ArtifactEvent, by_hand.pk, skip) == stored(ArtifactEvent, by_orm.pk, skip)
    read = ArtifactEvent.objects.get(pk=by_hand.pk)
    assert read.to_payload() | {"artifact_id": "", "event_id": "", "sequence": 0} == (
        ArtifactEvent.objects.get(pk=by_orm.pk).to_payload()
        | {"artifact_id": "", "event_id": "", "sequence": 0}
    )


def test_more_rows_than_one_statement_takes_each_get_their_own_key():
    if not statements.raw_statements():
        pytest.skip(f"{connection.vendor} has no hand-written statements")
    session = new_session()
    rows = [attachment(session, f"att_{n:04d}") for n in range(300)]
    with transaction.atomic():
        statements.insert(rows)
    assert len({row.pk for row in rows}) == len(rows)
    keys = dict(Attachment.objects.filter(session=session).values_list("pk", "attachment_id"))
    assert {row.pk: row.attachment_id for row in rows} == keys


def test_a_batch_of_events_is_numbered_in_order_by_hand_and_by_orm(path):
    session = new_session()
    rows = [attachment(session, f"att_{path}_{n}") for n in range(5)]
    with transaction.atomic():
        Attachment.objects.bulk_create(rows)
        append_created_events([(session, rows)])
    events = list(ArtifactEvent.objects.filter(session=session).order_by("sequence"))
    assert [(e.sequence, e.attachment_id) for e in events] == [
        (n + 1, row.attachment_id) for n, row in enumerate(rows)
    ]
    assert all(e.ext == "gz" and e.size == 2**40 + 3 and e.created_at for e in events)


def test_batches_of_several_sessions_are_numbered_each_in_its_own_sequence(path):
    older, first_time, other = new_session(), new_session(), new_session()
    accept_upload(older, receive(older, "before.txt", b"an event already"))
    batches = [
        (session, [attachment(session, f"att_{path}_{session.pk}_{n}") for n in range(count)])
        for session, count in ((older, 3), (first_time, 2), (other, 1))
    ]
    with transaction.atomic():
        Attachment.objects.bulk_create([row for _session, rows in batches for row in rows])
        append_created_events(batches)
    for session, rows in batches:
        events = ArtifactEvent.objects.filter(session=session).order_by("sequence")
        numbered = [(e.sequence, e.attachment_id) for e in events]
        start = 2 if session == older else 1
        assert numbered[start - 1 :] == [
            (start + n, row.attachment_id) for n, row in enumerate(rows)
        ]
        assert EventStream.objects.get(session=session).last_sequence == start + len(rows) - 1


# The commit protocol on both paths


def test_an_upload_is_recorded_alike_by_hand_and_by_orm(path):
    session = new_session()
    found = session_for(Credentials(bearer=session.token), session.session_id)
    recorded = [
        accept_upload(found, receive(found, f"{path}-{n}.txt", f"content {n}".encode()))
        for n in range(3)
    ]
    for row in recorded:
        assert isinstance(row.pk, int) and row._state.adding is False
        assert row.session is found
        again = Attachment.objects.select_related("session").get(pk=row.pk)
        # By value: the instance keeps what it was given (a Source member, a str).
        assert {k: v for k, (_t, v) in fields_of(again).items()} == {
            k: v for k, (_t, v) in fields_of(row).items()
        }
        assert again.session.session_id == session.session_id
    assert (usage(session).files, usage(session).bytes) == (3, sum(r.size for r in recorded))
    assert usage(session) == counted_usage(session)
    assert_consistent(session)


def test_a_purged_session_is_refused_at_the_commit_point(path):
    session = new_session()
    found = session_for(Credentials(bearer=session.token), session.session_id)
    item = receive(found, "late.txt", b"too late")
    purge_session(Session.objects.get(pk=session.pk))
    with pytest.raises(SessionNotFound):
        accept_upload(found, item)
    assert not Attachment.objects.filter(session=session).exists()
    assert not ArtifactEvent.objects.filter(session=session).exists()
    with transaction.atomic():
        assert committing._count_in(found, [], live_only=True) is False
        assert committing._count_in(found, []) is True


def test_quotas_count_from_the_counters_the_statements_move(path, settings):
    settings.ATTACHMENTS_SESSION_MAX_FILES = 2
    session = new_session()
    accept_upload(session, receive(session, "a.txt", b"a" * 5))
    accept_upload(session, receive(session, "b.txt", b"b" * 7))
    with pytest.raises(QuotaExceeded):
        accept_upload(session, receive(session, "c.txt", b"c"))
    assert (usage(session).files, usage(session).bytes) == (2, 12)
    assert usage(session) == counted_usage(session)
    assert_consistent(session)


def test_values_are_prepared_by_the_fields_not_by_the_driver():
    # A Decimal or a naive datetime would be adapted differently by the
    # driver than by Django: the statements take what the field prepares.
    if not statements.raw_statements():
        pytest.skip(f"{connection.vendor} has no hand-written statements")
    session = new_session()
    row = attachment(session, "att_prepared")
    row.size = Decimal(5)  # type: ignore[assignment]
    row.created_at = timezone.now()
    with transaction.atomic():
        statements.insert([row])
    assert stored(Attachment, row.pk, ("id",))["size"][0] == "5"


def test_the_quota_check_locks_the_row_as_select_for_update_does(path, settings):
    settings.ATTACHMENTS_SESSION_MAX_BYTES = 10**6
    session = new_session()
    with CaptureQueriesContext(connection) as queries:
        accept_upload(session, receive(session, "a.txt", b"a"))
    reads = [
        q["sql"] for q in queries if q["sql"].startswith("SELECT") and "used_files" in q["sql"]
    ]
    assert len(reads) == 1
    assert reads[0].endswith("FOR UPDATE") is connection.features.has_select_for_update
