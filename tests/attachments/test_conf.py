from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.test import override_settings

from attachments.conf import conf


def test_defaults_when_unset():
    with override_settings():
        for name in ("ATTACHMENTS_WAREHOUSE_DIR", "ATTACHMENTS_MAX_UPLOAD_BYTES", "ATTACHMENTS_AUTO_CLEAN"):
            if hasattr(settings, name):
                delattr(settings, name)
        assert conf.WAREHOUSE_DIR == Path("WareHouse").absolute()
        assert conf.MAX_UPLOAD_BYTES is None
        assert conf.AUTO_CLEAN is False
        assert conf.LOCK_TIMEOUT == 30
        assert conf.UPLOAD_BUFFER_BYTES == 1 << 20


def test_follows_override_settings(tmp_path):
    with override_settings(ATTACHMENTS_WAREHOUSE_DIR=tmp_path, ATTACHMENTS_MAX_UPLOAD_BYTES=5):
        assert conf.WAREHOUSE_DIR == tmp_path
        assert conf.MAX_UPLOAD_BYTES == 5
