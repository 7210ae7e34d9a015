"""Operations commands: purge_sessions and usage_stats."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from attachments.models import Session

from .builders import DjangoPath, multipart, new_session

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def age(session, days: int) -> None:
    Session.objects.filter(pk=session.pk).update(updated_at=timezone.now() - timedelta(days=days))


def upload(session, name: str, content: bytes) -> None:
    body, content_type = multipart([("file", name, content)])
    assert DjangoPath().post(f"/api/uploads/{session.session_id}", body, content_type).status == 201


class TestPurgeSessions:
    def test_purges_only_sessions_older_than_the_age(self):
        old, recent = new_session("old"), new_session("recent")
        upload(old, "a.txt", b"a")
        age(old, 40)
        age(recent, 2)
        output = run("purge_sessions", "--older-than", "30d")
        assert "purging old" in output and "1 session(s) purged" in output
        assert not old.directory.exists()
        assert recent.directory.exists()
        assert list(Session.objects.live().values_list("session_id", flat=True)) == ["recent"]

    def test_dry_run_changes_nothing(self):
        old = new_session("old")
        age(old, 40)
        assert "would purge old" in run("purge_sessions", "--older-than", "30d", "--dry-run")
        assert old.directory.exists()
        assert Session.objects.live().count() == 1

    @pytest.mark.parametrize("value", ["30", "-1d", "soon", "1y"])
    def test_bad_ages_are_refused(self, value):
        with pytest.raises((CommandError, SystemExit)):
            run("purge_sessions", "--older-than", value)


def test_usage_stats():
    first, second = new_session("s1"), new_session("s2")
    upload(first, "a.md", b"# A")
    upload(second, "b.md", b"# Bb")
    stats = json.loads(run("usage_stats", "--json"))
    assert stats["sessions"]["live"] == 2
    assert stats["sessions"]["by_status"] == {"created": 2}
    assert stats["attachments"] == {
        "count": 2,
        "bytes": 7,
        "by_kind": {"file": 2},
        "by_source": {"user_upload": 2},
    }
    assert "Attachments: 2, 7\xa0bytes" in run("usage_stats")
