"""Serializers that share their fields give what fresh copies give."""

from __future__ import annotations

import pytest

from attachments.serializers import AttachmentSerializer

from .builders import attach, new_session

pytestmark = pytest.mark.django_db


def test_an_attachment_represented_with_shared_fields_reads_as_with_its_own_copies():
    session = new_session()
    first = attach(session, "a.txt", b"first")
    second = attach(session, "b.csv", b"x,y\n1,2\n")
    for attachment in (first, second, first):
        shared = AttachmentSerializer(attachment).data
        # A context makes the serializer build its own fields, as DRF does.
        copied = AttachmentSerializer(attachment, context={"copies": True}).data
        assert shared == copied
        assert shared["attachment_id"] == attachment.attachment_id
        assert shared["session_id"] == session.session_id
    assert AttachmentSerializer(second).data["name"] == "b.csv"
