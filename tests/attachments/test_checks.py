from __future__ import annotations

import pytest
from django.test import override_settings

from attachments.checks import check_settings


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def test_defaults_pass():
    assert check_settings() == []


@pytest.mark.parametrize("value", [42, ["a"]])
def test_warehouse_must_be_a_path(value):
    with override_settings(ATTACHMENTS_WAREHOUSE_DIR=value):
        assert ids(check_settings()) == ["attachments.E001"]


@pytest.mark.parametrize("value", [-1, "10", 1.5, True])
def test_max_upload_bytes_must_be_a_count(value):
    with override_settings(ATTACHMENTS_MAX_UPLOAD_BYTES=value):
        assert ids(check_settings()) == ["attachments.E002"]


@pytest.mark.parametrize(
    "name", ["ATTACHMENTS_LOCK_TIMEOUT", "ATTACHMENTS_UPLOAD_BUFFER_BYTES"]
)
def test_numbers_must_be_numbers(name):
    with override_settings(**{name: "soon"}):
        assert ids(check_settings()) == ["attachments.E003"]
