"""Attachment changes become artifact events, in the transaction that makes them."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from artifacts.feed import FeedQuery, read_page
from artifacts.groups import events_group
from artifacts.models import ArtifactEvent, EventStream
from attachments.manifest_sync import manifest_for, sync_session_from_manifest
from attachments.models import Attachment, Session
from attachments.sessions import purge_session

from .builders import (
    DROPPING_LAYER,
    FAILING_LAYER,
    HELD_LAYER,
    DroppingChannelLayer,
    FailingChannelLayer,
    HeldChannelLayer,
    add_attachment,
    asgi_client,
    new_session,
    until,
)

pytestmark = pytest.mark.django_db


def changes(session: Session) -> list[tuple[int, str, str]]:
    return list(
        ArtifactEvent.objects.filter(session=session)
        .order_by("sequence")
        .values_list("sequence", "change_type", "name")
    )


def test_creating_an_attachment_appends_a_created_event():
    session = new_session()
    add_attachment(session, "spec.md", mime="text/markdown")
    assert changes(session) == [(1, "created", "spec.md")]


def test_an_upload_through_the_api_appends_an_event_whose_path_is_in_the_session_dir(warehouse):
    session = new_session("up")
    response = APIClient().post("/api/uploads/up", {"file": _file("notes.txt", b"hello")})
    assert response.status_code == 201
    event = ArtifactEvent.objects.get(session=session)
    assert event.attachment_id == response.json()["attachment_id"]
    assert (warehouse / "session_up" / event.path).read_bytes() == b"hello"
    assert event.to_payload()["hash"] == "sha256:" + response.json()["sha256"]


def _file(name: str, content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content)


def test_changing_content_appends_updated_and_other_saves_append_nothing():
    session = new_session()
    attachment = add_attachment(session, "data.csv", size=3)
    attachment.metadata = {"rows": 1}
    attachment.save()
    attachment.name = "renamed.csv"
    attachment.save(update_fields=["name"])
    attachment.sha256, attachment.size = "f" * 64, 9
    attachment.save()
    event = ArtifactEvent.objects.get(session=session, sequence=2)
    assert changes(session) == [(1, "created", "data.csv"), (2, "updated", "renamed.csv")]
    assert (event.size, event.sha256) == (9, "f" * 64)


def test_a_saved_copy_that_changed_nothing_appends_nothing():
    session = new_session()
    add_attachment(session)
    Attachment.objects.get().save()
    assert len(changes(session)) == 1


def test_purging_an_attachment_appends_deleted_once():
    session = new_session()
    attachment = add_attachment(session, "gone.txt")
    attachment.purged_at = timezone.now()
    attachment.save(update_fields=["purged_at"])
    attachment.delete()
    assert changes(session) == [(1, "created", "gone.txt"), (2, "deleted", "gone.txt")]


def test_restoring_a_purged_attachment_appends_created():
    session = new_session()
    attachment = add_attachment(session, "back.txt")
    attachment.purged_at = timezone.now()
    attachment.save()
    attachment.purged_at = None
    attachment.save()
    assert [c for _, c, _ in changes(session)] == ["created", "deleted", "created"]


def test_deleting_an_attachment_appends_deleted():
    session = new_session()
    add_attachment(session, "x.txt").delete()
    assert [c for _, c, _ in changes(session)] == ["created", "deleted"]


def test_a_manifest_sync_reports_removed_entries_as_deleted():
    session = new_session("sync")
    manifest_for(session).path.parent.mkdir(parents=True, exist_ok=True)
    add_attachment(session, "stale.txt")
    report = sync_session_from_manifest(session)
    assert report.removed == 1
    assert changes(session) == [(1, "created", "stale.txt"), (2, "deleted", "stale.txt")]


def test_fixture_loading_appends_nothing(tmp_path):
    session = new_session("fix")
    fixture = tmp_path / "a.json"
    fixture.write_text(
        '[{"model": "attachments.attachment", "fields": {"attachment_id": "att_0123456789ab",'
        f' "session": {session.pk}, "name": "f.txt", "path": "p", "mime": "text/plain",'
        ' "size": 1, "sha256": "00"}}]'
    )
    call_command("loaddata", str(fixture), verbosity=0)
    assert changes(session) == []


def test_a_rolled_back_change_leaves_no_event_and_no_gap():
    session = new_session()
    with pytest.raises(RuntimeError), transaction.atomic():
        add_attachment(session, "never.txt")
        raise RuntimeError
    add_attachment(session, "kept.txt")
    assert changes(session) == [(1, "created", "kept.txt")]


def test_deleting_a_whole_session_deletes_its_events():
    session = new_session()
    add_attachment(session)
    Session.objects.filter(pk=session.pk).delete()
    assert ArtifactEvent.objects.count() == 0
    assert EventStream.objects.count() == 0


def test_purging_a_session_drops_its_events():
    session = new_session("purged")
    add_attachment(session)
    add_attachment(session)
    purge_session(session)
    assert ArtifactEvent.objects.filter(session=session).count() == 0


@pytest.mark.django_db(transaction=True)
async def test_each_commit_is_announced_to_the_sessions_group_after_commit():
    session = await database_sync_to_async(new_session)("announced")
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events_group("announced"), channel)
    try:

        def rolled_back() -> None:
            with pytest.raises(RuntimeError), transaction.atomic():
                add_attachment(session)
                raise RuntimeError

        await database_sync_to_async(rolled_back)()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(channel), 0.3)
        await database_sync_to_async(add_attachment)(session)
        message = await asyncio.wait_for(layer.receive(channel), 5)
        assert message == {"type": "artifact.events", "session_id": "announced", "sequence": 1}
    finally:
        await layer.group_discard(events_group("announced"), channel)


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_commit_gap_free_sequences_that_readers_see_in_order():
    """
    Writers in several threads (each its own connection and transaction, held
    open a moment so they contend) and a reader following the cursor: the
    reader sees 1..N exactly once, in order, and never a page that skips one.
    """
    session = new_session("busy")
    writers, per_writer = 4, 12
    total = writers * per_writer
    errors: list[BaseException] = []

    def write(index: int) -> None:
        try:
            for i in range(per_writer):
                with transaction.atomic():
                    add_attachment(session, f"w{index}-{i}.txt")
                    time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 (reported by the test thread)
            errors.append(exc)
        finally:
            connection.close()

    seen: list[int] = []

    def read() -> None:
        cursor = 0
        deadline = time.monotonic() + 60
        try:
            while len(seen) < total and time.monotonic() < deadline:
                page = read_page("busy", FeedQuery(after=cursor, limit=7))
                got = [e["sequence"] for e in page.events]
                assert got == list(range(cursor + 1, cursor + 1 + len(got)))
                seen.extend(got)
                assert page.next_cursor >= cursor
                cursor = page.next_cursor
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    threads.append(threading.Thread(target=read))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert seen == list(range(1, total + 1))
    assert EventStream.objects.get(session=session).last_sequence == total


@pytest.fixture
def held_layer(settings):
    settings.CHANNEL_LAYERS = HELD_LAYER
    HeldChannelLayer.reset()
    yield HeldChannelLayer
    HeldChannelLayer.release()


async def _upload(client, session_id: str, name: str):
    """An upload through the ASGI application, which must be answered within 10 s."""
    files = {"file": (name, b"content of " + name.encode())}
    request = client.post(f"/api/uploads/{session_id}", files=files)
    return await asyncio.wait_for(request, 10)


@pytest.mark.django_db(transaction=True)
async def test_an_upload_is_answered_while_its_announcement_is_still_on_its_way(
    warehouse, held_layer
):
    await database_sync_to_async(new_session)("slow-layer")
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events_group("slow-layer"), channel)
    async with asgi_client() as client:
        response = await _upload(client, "slow-layer", "a.txt")
    assert response.status_code == 201
    assert [message["sequence"] for message in held_layer.held] == [1]
    held_layer.release()
    message = await asyncio.wait_for(layer.receive(channel), 5)
    assert message == {"type": "artifact.events", "session_id": "slow-layer", "sequence": 1}


@pytest.mark.django_db(transaction=True)
async def test_uploads_made_while_an_announcement_is_in_flight_are_announced_together(
    warehouse, held_layer
):
    await database_sync_to_async(new_session)("burst")
    async with asgi_client() as client:
        for index in range(4):
            assert (await _upload(client, "burst", f"{index}.txt")).status_code == 201
    assert [message["sequence"] for message in held_layer.held] == [1]
    held_layer.release()
    await until(lambda: len(held_layer.held) == 2)
    assert [message["sequence"] for message in held_layer.held] == [1, 4]


@pytest.mark.django_db(transaction=True)
async def test_a_purge_merged_with_uploads_is_still_announced_as_a_purge(warehouse, held_layer):
    session = await database_sync_to_async(new_session)("merged-purge")
    async with asgi_client() as client:
        for index in range(3):
            assert (await _upload(client, "merged-purge", f"{index}.txt")).status_code == 201
    await database_sync_to_async(purge_session)(session)
    held_layer.release()
    await until(lambda: len(held_layer.held) == 2)
    # Three uploads and their three deletions, then the purge: one message.
    assert held_layer.held[1]["sequence"] == 6
    assert held_layer.held[1]["purged"] is True


@pytest.mark.django_db(transaction=True)
def test_a_commit_outside_a_server_is_announced_before_it_returns(settings):
    settings.CHANNEL_LAYERS = DROPPING_LAYER
    session = new_session("command")
    before = DroppingChannelLayer.dropped
    add_attachment(session, "from-a-command.txt")
    assert DroppingChannelLayer.dropped == before + 1


@pytest.mark.django_db(transaction=True)
async def test_an_upload_succeeds_when_the_layer_is_down_and_the_failure_is_logged(
    warehouse, settings, caplog
):
    settings.CHANNEL_LAYERS = FAILING_LAYER
    FailingChannelLayer.attempts = 0
    await database_sync_to_async(new_session)("layer-down")
    async with asgi_client() as client:
        response = await _upload(client, "layer-down", "kept.txt")
        listed = await client.get("/api/uploads/layer-down")
    assert response.status_code == 201
    assert [a["name"] for a in listed.json()["attachments"]] == ["kept.txt"]
    # Tried twice (the second time on a fresh connection), then logged.
    await until(lambda: FailingChannelLayer.attempts == 2)
    await until(lambda: "Could not announce events of session layer-down" in caplog.text)
