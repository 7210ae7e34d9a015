from __future__ import annotations

import pytest
from django.test import override_settings

from workflows.checks import check_settings
from workflows.conf import EXAMPLES_DIR, conf


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def test_defaults_pass():
    assert check_settings() == []


def test_defaults():
    assert conf.DIR == EXAMPLES_DIR
    assert conf.NODE_TIMEOUT == 300
    assert conf.NODE_MEMORY_BYTES == 2 << 30
    assert conf.HUMAN_INPUT_TIMEOUT is None
    assert conf.WATCH_WORKSPACE is True


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("WORKFLOWS_DIR", 42, "workflows.E001"),
        ("WORKFLOWS_NODE_TIMEOUT", 0, "workflows.E002"),
        ("WORKFLOWS_WATCH_DEBOUNCE", "1", "workflows.E002"),
        ("WORKFLOWS_HEARTBEAT_TIMEOUT", True, "workflows.E002"),
        ("WORKFLOWS_NODE_MEMORY_BYTES", -1, "workflows.E003"),
        ("WORKFLOWS_HUMAN_INPUT_TIMEOUT", "soon", "workflows.E003"),
        ("WORKFLOWS_NODE_ENV", {"A": 1}, "workflows.E004"),
        ("WORKFLOWS_NODE_ENV", ["A"], "workflows.E004"),
    ],
)
def test_bad_values_are_reported(name, value, error):
    with override_settings(**{name: value}):
        assert ids(check_settings()) == [error]
