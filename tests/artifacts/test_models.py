from __future__ import annotations

import time

import pytest
from django.db import IntegrityError, transaction

from artifacts.models import ArtifactEvent, EventStream
from attachments.identifiers import ID_RE

from .builders import add_attachment, new_session

pytestmark = pytest.mark.django_db


def test_an_event_carries_every_field_of_the_contract():
    session = new_session("s1")
    attachment = add_attachment(
        session, "Report.PDF", mime="application/pdf", size=12, node_id="n1"
    )
    event = ArtifactEvent.objects.get()
    payload = event.to_payload()
    assert set(payload) == {
        "artifact_id",
        "attachment_id",
        "node_id",
        "path",
        "name",
        "size",
        "mime",
        "kind",
        "hash",
        "timestamp",
        "change_type",
        "sequence",
        "event_id",
        "file_name",
        "mime_type",
        "sha256",
        "relative_path",
        "created_at",
    }
    assert payload["attachment_id"] == attachment.attachment_id
    assert payload["node_id"] == "n1"
    assert payload["path"] == attachment.path
    assert payload["name"] == "Report.PDF"
    assert (payload["size"], payload["mime"], payload["kind"]) == (12, "application/pdf", "file")
    assert payload["hash"] == f"sha256:{attachment.sha256}"
    assert payload["change_type"] == "created"
    assert payload["sequence"] == 1
    assert abs(payload["timestamp"] - time.time()) < 60
    assert event.ext == "pdf"


def test_an_event_also_carries_the_reference_platforms_names():
    session = new_session("s1")
    attachment = add_attachment(session, "chart.png", mime="image/png", node_id="plot")
    payload = ArtifactEvent.objects.get().to_payload()
    assert payload["event_id"] == payload["artifact_id"]
    assert payload["file_name"] == payload["name"] == "chart.png"
    assert payload["mime_type"] == payload["mime"] == "image/png"
    assert payload["sha256"] == attachment.sha256 == payload["hash"].removeprefix("sha256:")
    assert payload["created_at"] == payload["timestamp"]
    assert attachment.path.startswith("code_workspace/")
    assert payload["relative_path"] == attachment.path.removeprefix("code_workspace/")


@pytest.mark.parametrize(
    ("path", "relative"),
    [
        ("code_workspace/result.json", "result.json"),
        ("code_workspace/attachments/att_x/a b.txt", "attachments/att_x/a b.txt"),
        ("code_workspace/", None),
        ("elsewhere/result.json", None),
        ("code_workspaces/x", None),
    ],
)
def test_relative_path_is_relative_to_the_workspace(path, relative):
    from artifacts.models import workspace_relative

    assert workspace_relative(path) == relative


def test_artifact_ids_are_opaque_and_unique():
    session = new_session()
    for _ in range(3):
        add_attachment(session)
    ids = list(ArtifactEvent.objects.values_list("artifact_id", flat=True))
    assert len(set(ids)) == 3
    assert all(i.startswith("art_") and ID_RE.match(i) for i in ids)


def test_a_blank_node_is_null_on_the_wire():
    add_attachment(new_session())
    assert ArtifactEvent.objects.get().to_payload()["node_id"] is None


def test_a_sequence_is_unique_within_its_session():
    session = new_session()
    add_attachment(session)
    event = ArtifactEvent.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        ArtifactEvent.objects.create(
            session=session,
            sequence=event.sequence,
            change_type="created",
            path="p",
            name="n",
            size=0,
            mime="text/plain",
            sha256="0" * 64,
        )


def test_sessions_number_their_events_independently():
    first, second = new_session("one"), new_session("two")
    add_attachment(first)
    add_attachment(second)
    add_attachment(first)
    assert list(first.artifact_events.values_list("sequence", flat=True)) == [1, 2]
    assert list(second.artifact_events.values_list("sequence", flat=True)) == [1]
    assert EventStream.objects.get(session=first).last_sequence == 2
    assert str(EventStream.objects.get(session=first)) == f"{first.pk} @ 2"
