"""MAC_SERVER_CPU: which CPU the default server keeps its threads on."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from macproject.cpu import server_cpu


@pytest.mark.parametrize(
    ("setting", "allowed", "cpu"),
    [
        ("auto", {0, 1}, 0),
        ("auto", {2, 3, 5}, 2),
        ("AUTO ", {0, 1}, 0),
        ("1", {0, 1}, 1),
        ("off", {0, 1}, None),
        ("", {0, 1}, None),
        ("auto", {3}, None),  # one CPU: nothing to keep apart
        ("0", {0}, None),
    ],
)
def test_the_cpu_chosen(setting: str, allowed: set[int], cpu: int | None):
    assert server_cpu(setting, allowed) == cpu


@pytest.mark.parametrize("setting", ["7", "first", "-1"])
def test_a_cpu_that_cannot_be_used_is_refused_by_name(setting: str):
    with pytest.raises(ImproperlyConfigured, match="MAC_SERVER_CPU"):
        server_cpu(setting, {0, 1})
