from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.test import override_settings

from artifacts.checks import check_settings


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def test_defaults_pass():
    assert check_settings() == []


def test_registered_with_django():
    with override_settings(ARTIFACTS_EVENT_RETENTION=0):
        assert "artifacts.E001" in ids(run_checks())


@pytest.mark.parametrize("value", [0, -3, 2.5, "100", True])
def test_retention_must_be_none_or_a_positive_count(value):
    with override_settings(ARTIFACTS_EVENT_RETENTION=value):
        assert ids(check_settings()) == ["artifacts.E001"]


def test_retention_may_be_a_count():
    with override_settings(ARTIFACTS_EVENT_RETENTION=1000):
        assert check_settings() == []


@pytest.mark.parametrize(
    "name",
    [
        "ARTIFACTS_RECHECK_SECONDS",
        "ARTIFACTS_MAX_WAIT_SECONDS",
        "ARTIFACTS_SSE_KEEPALIVE_SECONDS",
        "ARTIFACTS_SHUTDOWN_GRACE",
    ],
)
@pytest.mark.parametrize("value", [0, -1, "1", None, False])
def test_durations_must_be_positive_numbers(name, value):
    with override_settings(**{name: value}):
        assert ids(check_settings()) == ["artifacts.E002"]


@pytest.mark.parametrize("value", [0, 1.5, "200", True])
def test_page_size_must_be_a_positive_integer(value):
    with override_settings(ARTIFACTS_MAX_PAGE_SIZE=value):
        assert "artifacts.E003" in ids(check_settings())


@pytest.mark.parametrize("value", [199, "many", 1.0])
def test_scan_bound_must_cover_a_page(value):
    with override_settings(ARTIFACTS_MAX_SCAN_EVENTS=value):
        assert ids(check_settings()) == ["artifacts.E004"]


def test_without_a_channel_layer_waiters_rely_on_rechecks():
    with override_settings(CHANNEL_LAYERS={}):
        assert ids(check_settings()) == ["artifacts.W001"]


def test_the_feed_middleware_setting_that_was_renamed_is_pointed_out():
    security = "django.middleware.security.SecurityMiddleware"
    with override_settings(ARTIFACTS_FEED_MIDDLEWARE=[security]):
        assert ids(check_settings()) == ["artifacts.W002"]
