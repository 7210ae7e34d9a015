from __future__ import annotations

import importlib

from django.conf import settings
from django.test import override_settings

from artifacts.conf import conf

NAMES = [
    "ARTIFACTS_EVENT_RETENTION",
    "ARTIFACTS_RECHECK_SECONDS",
    "ARTIFACTS_MAX_WAIT_SECONDS",
    "ARTIFACTS_MAX_PAGE_SIZE",
    "ARTIFACTS_MAX_SCAN_EVENTS",
    "ARTIFACTS_SSE_KEEPALIVE_SECONDS",
    "ARTIFACTS_SHUTDOWN_GRACE",
]


def test_defaults_when_unset():
    with override_settings():
        for name in NAMES:
            if hasattr(settings, name):
                delattr(settings, name)
        assert conf.EVENT_RETENTION is None
        assert conf.RECHECK_SECONDS == 1.0
        assert conf.MAX_WAIT_SECONDS == 60
        assert conf.MAX_PAGE_SIZE == 200
        assert conf.MAX_SCAN_EVENTS == 10_000
        assert conf.SSE_KEEPALIVE_SECONDS == 15
        assert conf.SHUTDOWN_GRACE == 10


def test_follows_override_settings():
    with override_settings(ARTIFACTS_EVENT_RETENTION=50, ARTIFACTS_RECHECK_SECONDS=0.25):
        assert conf.EVENT_RETENTION == 50
        assert conf.RECHECK_SECONDS == 0.25


def test_the_reference_settings_read_the_environment(monkeypatch):
    import macproject.settings as reference

    monkeypatch.setenv("MAC_EVENT_RETENTION", "500")
    monkeypatch.setenv("MAC_EVENT_RECHECK_SECONDS", "0.5")
    monkeypatch.setenv("MAC_SHUTDOWN_GRACE", "3")
    try:
        reloaded = importlib.reload(reference)
        assert reloaded.ARTIFACTS_EVENT_RETENTION == 500
        assert reloaded.ARTIFACTS_RECHECK_SECONDS == 0.5
        assert reloaded.ARTIFACTS_SHUTDOWN_GRACE == 3
    finally:
        monkeypatch.delenv("MAC_EVENT_RETENTION")
        monkeypatch.delenv("MAC_EVENT_RECHECK_SECONDS")
        monkeypatch.delenv("MAC_SHUTDOWN_GRACE")
        reloaded = importlib.reload(reference)
    assert reloaded.ARTIFACTS_EVENT_RETENTION is None
    assert reloaded.ARTIFACTS_RECHECK_SECONDS == 1.0
    assert reloaded.ARTIFACTS_SHUTDOWN_GRACE == 10
